"""`gpujobs ui`: the local dashboard, over plain HTTP (who may ask, what is escaped) and in a real
browser (Debian's chromium driven by Playwright): a running job's log grows while the page is
open, its chart gets points, and the stop button stops it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gpujobs.api import default_controller
from gpujobs.cli.dashboard.server import Dashboard
from tests.conftest import gpujobs_cli, write_spec
from tests.test_cli import status_json, wait_for

CHROMIUM = "/usr/bin/chromium"


@pytest.fixture
def dashboard() -> Iterator[Dashboard]:
    board = Dashboard(default_controller)
    board.start()
    yield board
    board.close()


def get(board: Dashboard, path: str, **headers: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{board.port}{path}", headers=headers, timeout=10)


def test_only_the_token_opens_it_and_only_on_loopback(dashboard: Dashboard) -> None:
    assert dashboard.server.server_address[0] == "127.0.0.1"
    assert get(dashboard, "/").status_code == 403
    assert get(dashboard, "/?token=wrong").status_code == 403
    assert get(dashboard, "/api/jobs?token=" + dashboard.token[:-1]).status_code == 403
    ok = get(dashboard, f"/?token={dashboard.token}")
    assert ok.status_code == 200 and "No jobs yet" in ok.text
    assert "nonce-" in ok.headers["Content-Security-Policy"]
    assert ok.headers["Referrer-Policy"] == "same-origin"
    # DNS rebinding: a page of another site, its name pointed at 127.0.0.1, is refused.
    rebound = get(dashboard, f"/?token={dashboard.token}", Host=f"evil.example:{dashboard.port}")
    assert rebound.status_code == 403


def test_a_stop_needs_a_post_with_the_token_from_this_origin(dashboard: Dashboard) -> None:
    base = f"http://127.0.0.1:{dashboard.port}"
    refused = httpx.post(f"{base}/job/x/stop", data={"token": "nope"}, timeout=10)
    assert refused.status_code == 403
    foreign = httpx.post(
        f"{base}/job/x/stop",
        data={"token": dashboard.token},
        headers={"Origin": "https://evil.example"},
        timeout=10,
    )
    assert foreign.status_code == 403
    unknown = httpx.post(f"{base}/job/nosuchjob/stop", data={"token": dashboard.token}, timeout=10)
    assert unknown.status_code == 404


def test_what_a_job_wrote_is_shown_escaped(dashboard: Dashboard, tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        name: hostile-output
        command: "echo '<img src=x onerror=alert(1)>'; exit 3"
        """,
    )
    gpujobs_cli("launch", str(spec), timeout=120)
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    page = get(dashboard, f"/job/{job['id']}?token={dashboard.token}")
    assert page.status_code == 200
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text, "the error's last lines, escaped"
    assert "<img src=x" not in page.text
    log = get(dashboard, f"/api/job/{job['id']}/log?offset=0&token={dashboard.token}").json()
    assert "<img src=x onerror=alert(1)>" in log["text"] and log["state"] == "FAILED"
    listing = get(dashboard, f"/?token={dashboard.token}")
    assert job["id"] in listing.text and "FAILED" in listing.text


TICKING = r"""
name: ticking
command: >-
  i=0; while [ $i -lt 600 ]; do echo "tick $i";
  echo "{\"step\": $i, \"loss\": $(( 1000 / (i + 1) ))}" >> "$GPUJOBS_CKPT_DIR/metrics.jsonl";
  i=$((i+1)); sleep 0.2; done
checkpoints: {every_minutes: 0.02}
"""


def chromium_or_skip() -> None:
    if shutil.which(CHROMIUM) is None:
        if os.environ.get("CI") == "true":
            pytest.fail("CI must run the browser test: apt-get install chromium")
        pytest.skip("no /usr/bin/chromium (apt-get install chromium)")


def test_in_a_browser_the_log_grows_the_chart_fills_and_stop_stops(tmp_path: Path) -> None:
    chromium_or_skip()
    from playwright.sync_api import sync_playwright

    artifacts = Path(os.environ.get("GPUJOBS_TEST_ARTIFACTS", tmp_path / "artifacts"))
    artifacts.mkdir(parents=True, exist_ok=True)
    job_id = gpujobs_cli("launch", "--detach", str(write_spec(tmp_path, TICKING))).stdout.strip()
    log = tmp_path / "home" / "logs" / f"{job_id}.log"
    wait_for(lambda: log.exists() and b"tick 2" in log.read_bytes(), what="the job to run")
    # The dashboard runs as a user runs it: `gpujobs ui --no-open`, its URL on stderr.
    ui = subprocess.Popen(
        [sys.executable, "-m", "gpujobs", "ui", "--no-open"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert ui.stderr is not None
        url = ui.stderr.readline().split("gpujobs ui: ", 1)[1].strip()
        base, token = url.split("/?token=")
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                headless=True,
                args=["--no-sandbox", "--disable-background-networking"],
            )
            page = browser.new_page()
            page.goto(url)
            assert job_id in page.inner_text("#jobs") and "RUNNING" in page.inner_text("#jobs")
            page.screenshot(path=str(artifacts / "jobs.png"))
            page.click(f"text={job_id}")
            # Polled from here: the page's CSP (rightly) refuses the eval wait_for_function uses.
            wait_for(lambda: len(page.inner_text("#log")) > 0, what="the log to show")
            first = len(page.inner_text("#log"))
            wait_for(lambda: len(page.inner_text("#log")) > first + 20, what="the log to grow")

            def chart_points() -> int:
                lines = page.locator("#chart polyline")
                counts = [
                    len((lines.nth(i).get_attribute("points") or "").split())
                    for i in range(lines.count())
                ]
                return max(counts, default=0)

            wait_for(lambda: chart_points() > 2, what="the chart to get points")
            page.screenshot(path=str(artifacts / "job.png"), full_page=True)
            page.click("#stop")
            page.wait_for_load_state()
            # A refusal is a plain-text page that starts "403 ..." (the chart's own numbers may
            # hold a "403" anywhere).
            assert not page.inner_text("body").lstrip().startswith("403 ")
            wait_for(lambda: status_json(job_id)["state"] == "CANCELLED", what="the stop")
            page.goto(f"{base}/job/{job_id}?token={token}")
            assert "CANCELLED" in page.inner_text("#state")
            page.goto(f"{base}/budget?token={token}")
            assert "spend per day" in page.content()
            page.screenshot(path=str(artifacts / "budget.png"), full_page=True)
            browser.close()
    finally:
        ui.terminate()
        ui.wait(timeout=10)
        if status_json(job_id)["state"] not in ("CANCELLED", "SUCCEEDED", "FAILED"):
            gpujobs_cli("down", job_id)
    assert time.monotonic() > 0 and (artifacts / "job.png").stat().st_size > 1000
