"""The dashboard's pages, rendered here: every value from a job (names, log lines, errors) is
HTML-escaped; the one script is inline, with the request's CSP nonce, and fetches only this
server's JSON, so the page needs nothing from the internet and no build step."""

from __future__ import annotations

import time
from html import escape
from typing import Any
from urllib.parse import quote

from gpujobs.money.report import BudgetReport

_STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}
a{color:#0a58ca}table{border-collapse:collapse}td,th{padding:.25em .8em;text-align:left}
tr:nth-child(even){background:#f4f4f4}pre{background:#111;color:#ddd;padding:.8em;
max-height:28em;overflow:auto;white-space:pre-wrap}.SUCCEEDED{color:#198754}
.FAILED{color:#dc3545}.CANCELLED,.RECOVERING{color:#b58100}.RUNNING{color:#0a7ea4}
.lost{color:#dc3545}nav a{margin-right:1em}img{max-width:256px;margin:.3em;border:1px solid #ccc}
svg{background:#fafafa;border:1px solid #ddd}button{padding:.3em 1em}
"""


def _page(title: str, token: str, nonce: str, body: str, script: str = "") -> str:
    nav = (
        f'<nav><a href="/?token={quote(token)}">jobs</a>'
        f'<a href="/budget?token={quote(token)}">budget</a></nav>'
    )
    tail = f'<script nonce="{nonce}">{script}</script>' if script else ""
    return (
        "<!doctype html><html><head><meta charset=utf-8>"
        f"<title>{escape(title)} · gpujobs</title>"
        f'<style nonce="{nonce}">{_STYLE}</style></head>'
        f"<body>{nav}<h1>{escape(title)}</h1>{body}{tail}</body></html>"
    )


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else "-"


def jobs_page(rows: list[dict[str, Any]], token: str, nonce: str) -> str:
    body = ["<table id=jobs><tr><th>JOB</th><th>STATE</th><th>PLACEMENT</th>"
            "<th>STARTED</th><th>COST</th><th>CHECKPOINTS</th></tr>"]  # fmt: skip
    for row in rows:
        state = row["state"] + (" (driver lost)" if row["driver_lost"] else "")
        verdict = row.get("training_verdict")
        if verdict:
            state += " (training failed)"
        css = "lost" if row["driver_lost"] else row["state"]
        body.append(
            f'<tr><td><a href="/job/{quote(row["id"])}?token={quote(token)}">'
            f"{escape(row['id'])}</a></td>"
            f'<td class="{escape(css)}">{escape(state)}</td>'
            f"<td>{escape(row['placement'] or '-')}</td><td>{_when(row['created_at'])}</td>"
            f"<td>${row['cost_usd']:.2f}</td><td>{escape(row['runs_dir'])}</td></tr>"
        )
    body.append("</table>")
    if not rows:
        body = ["<p>No jobs yet: <code>gpujobs launch templates/mnist-local.yaml</code></p>"]
    # The list refreshes itself: a job's state changes while the page is open.
    script = "setTimeout(function(){location.reload()},3000);"
    return _page("jobs", token, nonce, "".join(body), script)


def job_page(job: dict[str, Any], pictures: list[str], token: str, nonce: str) -> str:
    job_id = job["id"]
    q = quote(token)
    live = job["state"] not in ("SUCCEEDED", "FAILED", "CANCELLED")
    stop = ""
    if live:
        stop = (
            f'<form method=post action="/job/{quote(job_id)}/stop">'
            f'<input type=hidden name=token value="{escape(token)}">'
            "<button id=stop type=submit>stop job</button> (what <code>gpujobs down</code> "
            "does: the checkpoint comes home, everything is torn down)</form>"
        )
    events = "".join(
        f"<tr><td>{_when(e['ts'])}</td><td>{escape(e['state'])}</td>"
        f"<td>{escape(e['message'])}</td></tr>"
        for e in job["events"]
    )
    nodes = "".join(
        f"<tr><td>{escape(n['node_id'])}</td><td>{escape(n['provider'])}</td>"
        f"<td>{escape(str(n.get('instance_type', '-')))}</td>"
        f"<td>{_when(n['created_at'])}</td><td>{_when(n['terminated_at'])}</td></tr>"
        for n in job["nodes"]
    )
    images = "".join(
        f'<img alt="{escape(name)}" title="{escape(name)}" '
        f'src="/job/{quote(job_id)}/picture?name={quote(name)}&token={q}">'
        for name in pictures
    )
    error = f"<p class=FAILED>{escape(job['error'])}</p>" if job.get("error") else ""
    body = (
        f'<p>state: <b id=state class="{escape(job["state"])}">{escape(job["state"])}</b> · '
        f"cost ${job['cost_usd']:.2f} · checkpoints in <code>{escape(job['runs_dir'])}</code>"
        f"</p>{error}{stop}"
        "<h2>metrics</h2><svg id=chart width=720 height=240></svg><div id=legend></div>"
        f"<h2>log</h2><pre id=log></pre>"
        f"<h2>pictures</h2><div id=pictures>{images or 'none yet'}</div>"
        f"<h2>events</h2><table>{events}</table>"
        f"<h2>nodes</h2><table>{nodes}</table>"
    )
    return _page(job_id, token, nonce, body, _job_script(job_id, token))


def _job_script(job_id: str, token: str) -> str:
    base = f"/api/job/{quote(job_id)}"
    return (
        "var T=" + _js(token) + ",B=" + _js(base) + ",off=0,C=['#0a7ea4','#dc3545','#198754',"
        "'#b58100'];function get(p,f){fetch(B+p+(p.indexOf('?')<0?'?':'&')+'token='+"
        "encodeURIComponent(T)).then(function(r){return r.json()}).then(f).catch(function(){})}"
        "function log(){get('/log?offset='+off,function(d){if(d.text){var l=document."
        "getElementById('log'),end=l.scrollTop+l.clientHeight>=l.scrollHeight-4;l.append("
        "document.createTextNode(d.text));if(end)l.scrollTop=l.scrollHeight}off=d.offset;"
        "document.getElementById('state').textContent=d.state})}"
        "function chart(){get('/metrics',function(rows){var s=document.getElementById('chart')"
        ",W=720,H=240,keys=[];rows.forEach(function(r){Object.keys(r).forEach(function(k){"
        "if(['step','epoch','time'].indexOf(k)<0&&keys.indexOf(k)<0)keys.push(k)})});"
        "keys=keys.slice(0,4);while(s.firstChild)s.removeChild(s.firstChild);var leg="
        "document.getElementById('legend');leg.textContent='';keys.forEach(function(k,i){"
        "var pts=rows.filter(function(r){return k in r}).map(function(r,j){return [('step'"
        " in r)?r.step:j,r[k]]});if(!pts.length)return;var xs=pts.map(function(p){return "
        "p[0]}),ys=pts.map(function(p){return p[1]}),x0=Math.min.apply(0,xs),x1=Math.max."
        "apply(0,xs),y0=Math.min.apply(0,ys),y1=Math.max.apply(0,ys);var line=document."
        "createElementNS('http://www.w3.org/2000/svg','polyline');line.setAttribute('fill',"
        "'none');line.setAttribute('stroke',C[i]);line.setAttribute('points',pts.map("
        "function(p){return (10+(W-20)*(x1>x0?(p[0]-x0)/(x1-x0):0.5)).toFixed(1)+','+(H-10-"
        "(H-20)*(y1>y0?(p[1]-y0)/(y1-y0):0.5)).toFixed(1)}).join(' '));line.setAttribute("
        "'data-series',k);s.appendChild(line);var t=document.createElement('span');t.style"
        ".color=C[i];t.textContent=k+' '+y0.toPrecision(3)+'..'+y1.toPrecision(3)+'  ';leg."
        "appendChild(t)})})}log();chart();setInterval(log,1000);setInterval(chart,2000);"
    )


def _js(value: str) -> str:
    """A JavaScript string literal that cannot end the script element."""
    import json

    return json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e")


def budget_page(report: BudgetReport, token: str, nonce: str) -> str:
    now = report.as_of
    limits = "".join(
        f"<tr><td>{escape(row.standing.limit.provider or 'all providers')}"
        f"{' (monthly)' if row.standing.limit.monthly else ''}</td>"
        f"<td>${row.standing.limit.limit_usd:,.2f}</td><td>${row.standing.spent:,.2f}</td>"
        f"<td>${row.remaining:,.2f}</td><td>${row.burn_per_hour:,.3f}/h</td>"
        f"<td>{_runs_out(row.runs_out_at, now)}</td></tr>"
        for row in report.limits
    )
    limits_table = (
        "<table id=limits><tr><th>BUDGET</th><th>LIMIT</th><th>SPENT</th><th>LEFT</th>"
        f"<th>BURN</th><th>RUNS OUT</th></tr>{limits}</table>"
        if limits
        else "<p>No budget set: <code>gpujobs budget set 300</code></p>"
    )
    jobs = "".join(
        f"<tr><td>{escape(job.job_id)}</td><td>{escape(job.state.value)}</td>"
        f"<td>{escape(job.placement)}</td><td>{job.hours:.2f}</td><td>${job.cost:,.2f}</td>"
        f"<td>${job.burn_per_hour:,.3f}/h</td></tr>"
        for job in report.jobs
    )
    body = (
        f"<p>spent ${report.total:,.2f} in all · burning ${report.burn_per_hour:,.3f}/h now</p>"
        f"{limits_table}<h2>spend per day (UTC, last {len(report.daily)} days)</h2>"
        f"{_daily_svg(report.daily)}"
        "<h2>jobs</h2><table><tr><th>JOB</th><th>STATE</th><th>PLACEMENT</th>"
        f"<th>NODE-HOURS</th><th>COST</th><th>BURN</th></tr>{jobs}</table>"
    )
    return _page("budget", token, nonce, body)


def _runs_out(at: float | None, now: float) -> str:
    if at is None:
        return "not at this rate"
    hours = (at - now) / 3600
    return f"{_when(at)} (in {hours:,.1f} h)"


def _daily_svg(daily: list[tuple[str, float]]) -> str:
    width, height = 720, 160
    top = max((spent for _, spent in daily), default=0.0) or 1.0
    bar = width / max(len(daily), 1)
    bars = "".join(
        f'<rect x="{i * bar:.1f}" y="{height - 20 - (height - 30) * spent / top:.1f}" '
        f'width="{bar * 0.8:.1f}" height="{(height - 30) * spent / top:.1f}" fill="#0a7ea4">'
        f"<title>{escape(day)}: ${spent:,.2f}</title></rect>"
        for i, (day, spent) in enumerate(daily)
    )
    labels = ""
    if daily:
        labels = (
            f'<text x="0" y="{height - 4}" font-size="11">{escape(daily[0][0])}</text>'
            f'<text x="{width - 70}" y="{height - 4}" font-size="11">{escape(daily[-1][0])}'
            f'</text><text x="4" y="12" font-size="11">${top:,.2f}</text>'
        )
    return f'<svg id=daily width="{width}" height="{height}">{bars}{labels}</svg>'


def message_page(title: str, text: str, token: str, nonce: str) -> str:
    return _page(title, token, nonce, f"<p>{escape(text)}</p>")
