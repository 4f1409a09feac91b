"""Money: the ledger, budgets and holds in the store, the `gpujobs budget` report and CLI, costs
in `gpujobs status`, and the v1 -> v2 migration. Every figure is computed at an explicit time."""

from __future__ import annotations

import calendar
import json
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gpujobs import state
from gpujobs.api.controller import Controller
from gpujobs.cli.app import create_app
from gpujobs.cli.budget_view import budget_json
from gpujobs.cli.clouds_view import quota_json
from gpujobs.money.budget import standings
from gpujobs.money.report import budget_report
from gpujobs.paths import HomeLayout
from gpujobs.placement.quota import QuotaReport
from gpujobs.providers.base import Quota
from gpujobs.state import Billing, JobState, Store
from gpujobs.testing import FakeClock

H = 3600.0
NOW = float(calendar.timegm((2025, 3, 20, 10, 0, 0)))
MONTH_TURN = float(calendar.timegm((2025, 3, 1, 0, 0, 0)))
SHARED_KEYS = {"provider", "scope", "code", "name", "unit", "limit", "in_use", "free", "request_at"}
ENVELOPE = {"report", "as_of", "limits", "problems"}


def new_job(store: Store, job_id: str) -> None:
    store.create_job(
        job_id=job_id,
        name=job_id,
        spec_json="{}",
        spec_path="/s.yaml",
        runs_dir=f"/runs/{job_id}",
        driver_pid=None,
        now=NOW - 10 * 24 * H,
    )


def node(
    store: Store,
    job_id: str,
    node_id: str,
    provider: str,
    price: float,
    start: float,
    *,
    end: float | None = None,
    ends_by: float | None = None,
) -> None:
    billing = Billing("gpu.x1", "r-1", False, price, started_at=start, ends_by=ends_by)
    store.add_node(
        job_id, node_id=node_id, provider=provider, node_json="{}", billing=billing, now=start
    )
    if end is not None:
        store.mark_node_terminated(job_id, node_id, now=end)


@pytest.fixture
def books(store: Store) -> Store:
    """aws job `a`: $4 done + a live $1/h node ($2 so far); gcp job `g`: $3/h across the turn of
    February ($6 each side); gcp job `t`: $4/h, its timer ended it 1 h ago unconfirmed ($8);
    job `z`: never got a node. In all $26; $20 this month; burning $1/h."""
    for job in ("a", "g", "t", "z"):
        new_job(store, job)
    node(store, "a", "a0", "aws", 2.0, NOW - 5 * H, end=NOW - 3 * H)
    node(store, "a", "a1", "aws", 1.0, NOW - 2 * H)
    node(store, "g", "g0", "gcp", 3.0, MONTH_TURN - 2 * H, end=MONTH_TURN + 2 * H)
    node(store, "t", "t0", "gcp", 4.0, NOW - 3 * H, ends_by=NOW - 1 * H)
    return store


def test_ledger_freezes_prices_and_ends_nodes_once(books: Store) -> None:
    books.add_node(
        "a",
        node_id="a1",
        provider="aws",
        node_json='{"host": "h"}',
        billing=Billing("other", "r-9", True, 99.0, started_at=NOW),
    )
    books.mark_node_terminated("a", "a0", now=NOW)  # already ended: the first end stays
    [a0, a1] = books.ledger("a")
    assert (a0.price_per_hour, a0.ended_at, a0.cost(NOW)) == (2.0, NOW - 3 * H, pytest.approx(4.0))
    assert (a1.price_per_hour, a1.instance_type, a1.started_at) == (1.0, "gpu.x1", NOW - 2 * H)
    assert a1.live(NOW) and a1.cost(NOW) == pytest.approx(2.0)
    assert a1.cost(NOW + H) == pytest.approx(3.0), "a live node accrues per second"
    [t0] = books.ledger("t")
    assert not t0.live(NOW) and t0.end(NOW) == NOW - H
    assert t0.cost(NOW) == t0.cost(NOW + 100 * H) == pytest.approx(8.0), "stops at ends_by"
    assert [entry.job_id for entry in books.ledger()] == ["g", "a", "t", "a"]  # oldest first
    assert books.ledger("z") == []


def test_report_per_job_month_day_and_burn(books: Store) -> None:
    report = budget_report(books, NOW)
    assert report.total == pytest.approx(26.0)
    assert report.burn_per_hour == pytest.approx(1.0), "only a1 runs; t0's timer ended it"
    jobs = {job.job_id: job for job in report.jobs}
    assert set(jobs) == {"a", "g", "t"}, "a job that never got a node cost nothing"
    assert (jobs["a"].cost, jobs["a"].hours, jobs["a"].burn_per_hour) == pytest.approx((6, 4, 1))
    assert (jobs["g"].cost, jobs["g"].hours, jobs["g"].burn_per_hour) == pytest.approx((12, 4, 0))
    assert (jobs["t"].cost, jobs["t"].hours, jobs["t"].burn_per_hour) == pytest.approx((8, 2, 0))
    assert jobs["a"].providers == "aws" and jobs["a"].started_at == NOW - 5 * H
    spend = {(item.month, item.provider): item.spent for item in report.spend}
    assert spend == pytest.approx(
        {("2025-03", "aws"): 6.0, ("2025-03", "gcp"): 14.0, ("2025-02", "gcp"): 6.0}
    )
    assert [item.month for item in report.spend][-1] == "2025-02", "newest month first"
    days = dict(report.daily)
    assert len(report.daily) == 30 and report.daily[-1][0] == "2025-03-20"
    assert report.daily[0][0] == "2025-02-19"
    assert days["2025-03-20"] == pytest.approx(14.0)
    assert days["2025-02-28"] == pytest.approx(6.0) and days["2025-03-01"] == pytest.approx(6.0)
    assert sum(days.values()) == pytest.approx(26.0)
    assert budget_report(books, NOW + 2 * H).total == pytest.approx(28.0)


def test_report_shows_twenty_jobs_unless_all(store: Store) -> None:
    for index in range(22):
        new_job(store, f"j{index:02d}")
        node(store, f"j{index:02d}", "n", "aws", 1.0, NOW - H, end=NOW)
    report = budget_report(store, NOW)
    assert (len(report.jobs), report.jobs_not_shown) == (20, 2)
    assert len(budget_report(store, NOW, show_all=True).jobs) == 22


def test_sums_made_by_sqlite_equal_the_per_node_arithmetic(store: Store) -> None:
    """The report sums settled nodes in SQL (Books.settled) and only the open ones in Python:
    on a ledger of every kind of node (ended within its day, ended exactly at a day's or a
    month's turn,
    across one or two turns, ended before it started, live, ended by its timer unconfirmed)
    each figure equals LedgerEntry.cost summed over every row."""
    import random

    from gpujobs.money.budget import month_bounds, month_of

    rng = random.Random(7)
    providers = ("aws", "gcp", "paperspace")
    for index in range(400):
        job = f"j{index}"
        new_job(store, job)
        start = NOW - rng.uniform(0, 120) * 24 * H
        kind = index % 6
        end: float | None = start + rng.uniform(0, 10) * H
        ends_by = None
        if kind == 1 and index % 4:
            end = start - start % (24 * H) + 24 * H  # exactly at a day's turn
        elif kind == 1:
            end = month_bounds(month_of(start))[1]  # exactly at a month's turn
        elif kind == 2:
            end = start + rng.uniform(20, 70) * 24 * H  # across one or two turns
        elif kind == 3:
            end = start - 5.0  # ended before it started: costs nothing
        elif kind == 4:
            end = None  # live
        elif kind == 5:
            end, ends_by = None, start + rng.uniform(0, 5) * H  # its timer ended it
        end = None if end is None else min(end, NOW)
        node(store, job, "n0", providers[index % 3], rng.uniform(0.1, 9.0), start, end=end,
             ends_by=ends_by)  # fmt: skip
    for provider in (None, "gcp"):
        for monthly in (False, True):
            store.set_budget(provider=provider, monthly=monthly, limit_usd=1e6, now=NOW)
    rows = store.ledger()
    books = store.books()
    assert 0 < len(books.open) < len(rows) - 50, "both ways are used"

    since, until = month_bounds(month_of(NOW))
    for standing in standings(books, NOW):
        window = {"since": since, "until": until} if standing.limit.monthly else {}
        expected = sum(e.cost(NOW, **window) for e in rows if standing.covers(e.provider))
        assert standing.spent == pytest.approx(expected, rel=1e-12), standing.label
    report = budget_report(store, NOW, show_all=True)
    assert report.total == pytest.approx(sum(e.cost(NOW) for e in rows), rel=1e-12)
    assert sum(month.spent for month in report.spend) == pytest.approx(report.total, rel=1e-12)
    march = sum(e.cost(NOW, since=since, until=until) for e in rows if e.provider == "aws")
    [aws_march] = [m.spent for m in report.spend if (m.month, m.provider) == ("2025-03", "aws")]
    assert aws_march == pytest.approx(march, rel=1e-12)
    day = 86400.0
    chart_from = NOW - NOW % day - 29 * day
    expected_days = sum(e.cost(NOW, since=chart_from) for e in rows)
    assert sum(total for _, total in report.daily) == pytest.approx(expected_days, rel=1e-12)
    assert sum(job.cost for job in report.jobs) == pytest.approx(report.total, rel=1e-12)


def test_budgets_count_their_period_and_provider_and_holds(books: Store) -> None:
    books.set_budget(provider=None, monthly=False, limit_usd=500, now=NOW)
    books.set_budget(provider=None, monthly=True, limit_usd=100, now=NOW)
    books.set_budget(provider="gcp", monthly=False, limit_usd=50, now=NOW)
    books.set_budget(provider="aws", monthly=True, limit_usd=200, now=NOW)

    def spent_held() -> dict[tuple[str | None, bool], tuple[float, float]]:
        return {
            (s.limit.provider, s.limit.monthly): (s.spent, s.held)
            for s in standings(books.books(), NOW)
        }

    assert spent_held() == pytest.approx(
        {
            (None, False): (26, 0),
            (None, True): (20, 0),
            ("gcp", False): (20, 0),
            ("aws", True): (6, 0),
        }
    )
    assert books.hold("a", "aws", lambda _: 10.0, now=NOW) == 10.0
    assert books.hold("t", "gcp", lambda _: 5.0, now=NOW) == 5.0
    assert books.hold("g", "gcp", lambda _: None, now=NOW) is None  # refused: nothing held
    assert {hold.job_id for hold in books.books().holds} == {"a", "t"}
    # What a and t spent before their holds (earlier placements) is not taken off them.
    assert spent_held() == pytest.approx(
        {
            (None, False): (26, 15),
            (None, True): (20, 15),
            ("gcp", False): (20, 5),
            ("aws", True): (6, 10),
        }
    )
    # a's held placement gets a $2/h node: an hour on, $2 of its $10 is spent, $8 still held.
    node(books, "a", "a2", "aws", 2.0, NOW)
    later = {(s.limit.provider, s.limit.monthly): s for s in standings(books.books(), NOW + H)}
    assert later[("aws", True)].held == pytest.approx(8.0)
    assert later[("aws", True)].spent == pytest.approx(6 + 1 + 2), "a1 and a2 ran an hour more"
    seen: list[set[str]] = []
    books.hold("a", "aws", lambda b: seen.append({h.job_id for h in b.holds}) or 7.0, now=NOW)
    assert seen == [{"t"}], "a job's own hold is replaced, not counted against it"
    by_key = {(s.limit.provider, s.limit.monthly): s for s in standings(books.books(), NOW)}
    assert by_key[(None, True)].held == pytest.approx(5.0 + 7.0)
    assert by_key[(None, True)].free == pytest.approx(100 - 20 - 12)
    books.transition("a", JobState.SUCCEEDED, now=NOW)
    books.transition("t", JobState.RUNNING, now=NOW)  # not terminal: keeps its hold
    assert [hold.job_id for hold in books.books().holds] == ["t"]
    assert spent_held()[(None, True)] == pytest.approx((20, 5)), "t still holds its $5"


def test_runs_out_at_the_burn_rate_or_not_this_month(books: Store) -> None:
    books.set_budget(provider=None, monthly=False, limit_usd=500, now=NOW)
    books.set_budget(provider=None, monthly=True, limit_usd=100, now=NOW)
    books.set_budget(provider="gcp", monthly=False, limit_usd=50, now=NOW)
    books.set_budget(provider="aws", monthly=True, limit_usd=300, now=NOW)
    rows = {
        (r.standing.limit.provider, r.standing.limit.monthly): r
        for r in budget_report(books, NOW).limits
    }
    assert rows[(None, False)].runs_out_at == pytest.approx(NOW + (500 - 26) / 1.0 * H)
    assert rows[(None, True)].runs_out_at == pytest.approx(NOW + 80 * H), "28 March: this month"
    assert rows[(None, True)].remaining == pytest.approx(80.0)
    assert rows[("aws", True)].burn_per_hour == pytest.approx(1.0)
    assert rows[("aws", True)].runs_out_at is None, "294 h on: April, the budget starts again"
    assert (rows[("gcp", False)].burn_per_hour, rows[("gcp", False)].runs_out_at) == (0.0, None)


# -- the CLI ------------------------------------------------------------------------------------
@pytest.fixture
def cli(home: HomeLayout, books: Store) -> tuple[CliRunner, object]:
    app = create_app(lambda: Controller(home, books, lambda: {}, clock=FakeClock(NOW)))
    return CliRunner(env={"COLUMNS": "250"}), app


def run(cli: tuple[CliRunner, object], *args: str, code: int = 0) -> object:
    runner, app = cli
    done = runner.invoke(app, list(args))
    assert done.exit_code == code, (args, done.output)
    assert "Traceback" not in done.output and "Traceback" not in done.stderr
    return done


def test_budget_cli_sets_reports_and_unsets(cli, books: Store) -> None:
    assert "budget set: $300.00 in all" in run(cli, "budget", "set", "300").stderr
    run(cli, "budget", "set", "50", "-p", "gcp", "--month")
    report = json.loads(run(cli, "budget", "--json").stdout)
    assert set(report) >= ENVELOPE and report["report"] == "budget"
    assert report["as_of"] == "2025-03-20T10:00:00Z" and report["problems"] == {}
    rows = {row["code"]: row for row in report["limits"]}
    assert set(rows) == {"budget", "budget-monthly"}
    assert all(set(row) >= SHARED_KEYS and row["unit"] == "USD" for row in rows.values())
    everything, gcp = rows["budget"], rows["budget-monthly"]
    assert (everything["provider"], everything["scope"]) == ("all", "all time")
    assert (everything["limit"], everything["in_use"], everything["free"]) == (300, 26, 274)
    assert everything["request_at"] == "gpujobs budget set AMOUNT"
    assert (gcp["provider"], gcp["scope"], gcp["spent"], gcp["free"]) == ("gcp", "2025-03", 14, 36)
    assert gcp["request_at"] == "gpujobs budget set AMOUNT --provider gcp --month"
    assert everything["runs_out_at"] == "2025-03-31T20:00:00Z" and gcp["runs_out_at"] is None
    assert {job["id"]: job["cost_usd"] for job in report["jobs"]} == {"a": 6, "g": 12, "t": 8}
    spend = {(item["month"], item["provider"]): item["spent_usd"] for item in report["spend"]}
    assert spend[("2025-02", "gcp")] == pytest.approx(6) and spend[("2025-03", "gcp")] == 14
    assert len(report["daily"]) == 30 and report["total_usd"] == pytest.approx(26)
    table = run(cli, "budget").stdout
    for text in (
        "$300.00",
        "$274.00",
        "$50.00",
        "budget-monthly",
        "2025-03",
        "spent in all: $26.00",
        "burning $1.00/h",
        "$14.00",
        "spend per day",
    ):
        assert text in table, text
    run(cli, "budget", "unset", "--provider", "gcp", "--month")
    assert [(limit.provider, limit.monthly) for limit in books.books().limits] == [(None, False)]
    gone = run(cli, "budget", "unset", "--provider", "gcp", "--month", code=2)
    assert "no such budget" in gone.stderr and len(gone.stderr.strip().splitlines()) == 1


def test_budget_cli_refuses_bad_amounts_and_providers(cli, books: Store) -> None:
    for args in (["0"], ["--", "-5"], ["nan"], ["10", "--provider", "azure"]):
        done = run(cli, "budget", "set", *args, code=2)
        assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert "above 0" in run(cli, "budget", "set", "--", "-5", code=2).stderr
    azure = run(cli, "budget", "set", "10", "--provider", "azure", code=2).stderr
    assert all(name in azure for name in ("aws", "gcp", "paperspace"))
    run(cli, "budget", "set", "-5", code=2)  # as typed: click takes it for an option; no traceback
    assert books.books().limits == []


def test_budget_without_budgets_says_how_to_set_one(home: HomeLayout, store: Store) -> None:
    app = create_app(lambda: Controller(home, store, lambda: {}, clock=FakeClock(NOW)))
    done = run((CliRunner(env={"COLUMNS": "250"}), app), "budget")
    assert "no budget set: gpujobs budget set 300" in done.stdout


def test_quota_and_budget_share_the_envelope_and_row_keys(books: Store) -> None:
    quota = Quota(
        provider="aws",
        region="us-east-1",
        code="L-DB2E81BA",
        name="G and VT",
        unit="vCPUs",
        limit=16,
        in_use=4,
        request_at="https://console",
        per_node=4,
    )
    quota_doc = quota_json(QuotaReport([quota], {"gcp": "no credentials"}))
    books.set_budget(provider="aws", monthly=True, limit_usd=10, now=NOW)
    budget_doc = budget_json(budget_report(books, NOW))
    assert set(quota_doc) >= ENVELOPE and set(budget_doc) >= ENVELOPE
    [quota_row], [budget_row] = quota_doc["limits"], budget_doc["limits"]
    assert set(quota_row) & set(budget_row) == SHARED_KEYS
    assert quota_row["free"] == 12 and budget_row["free"] == 4 and budget_row["in_use"] == 6
    assert quota_doc["as_of"].endswith("Z") and budget_doc["as_of"].endswith("Z")


# -- status -------------------------------------------------------------------------------------
def test_status_shows_cost_cap_and_node_prices(cli, books: Store) -> None:
    books.set_caps("a", usd=20.0, hours=10.0)
    listed = json.loads(run(cli, "status", "--json").stdout)
    money = {row["id"]: (row["cost_usd"], row["cap_usd"], row["cap_hours"]) for row in listed}
    assert money["a"] == (pytest.approx(6.0), 20.0, 10.0)
    assert money["z"] == (0, None, None)
    table = run(cli, "status").stdout
    assert "$6.00 of $20.00" in table and "$12.00" in table
    detail = json.loads(run(cli, "status", "g", "--json").stdout)
    assert detail["cost_usd"] == pytest.approx(12.0) and detail["cap_usd"] is None
    [g0] = detail["nodes"]
    assert (g0["price_per_hour"], g0["cost_usd"], g0["instance_type"]) == (3.0, 12.0, "gpu.x1")
    assert g0["billed_until"] == MONTH_TURN + 2 * H
    nodes = {n["node_id"]: n for n in json.loads(run(cli, "status", "a", "--json").stdout)["nodes"]}
    assert (nodes["a0"]["price_per_hour"], nodes["a1"]["price_per_hour"]) == (2.0, 1.0)
    assert nodes["a1"]["billed_until"] is None
    shown = run(cli, "status", "a").stdout
    assert "$2.000/h" in shown and "$1.000/h" in shown and "of $20.00" in shown


def test_status_detail_prices_live_nodes_at_the_controllers_clock(cli) -> None:
    detail = json.loads(run(cli, "status", "a", "--json").stdout)
    assert detail["cost_usd"] == pytest.approx(6.0)


# -- migration ----------------------------------------------------------------------------------
def make_v1(path: Path) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    for statement in state._MIGRATIONS[0]:
        db.execute(statement)
    db.execute("PRAGMA user_version = 1")
    db.execute(
        "INSERT INTO jobs (id, name, state, spec_json, spec_path, runs_dir, created_at, "
        "updated_at, placement) VALUES ('old-1', 'old', 'SUCCEEDED', '{}', 's', 'r', 1, 2, 'aws')"
    )
    db.close()


def test_a_v1_database_is_migrated_in_place(tmp_path: Path) -> None:
    make_v1(tmp_path / "state.db")
    store = Store(tmp_path / "state.db")
    old = store.job("old-1")
    assert (old.state, old.placement) == (JobState.SUCCEEDED, "aws")
    assert old.cap_usd is None and old.cap_hours is None
    assert store.ledger() == [] and store.books().limits == []
    node(store, "old-1", "n", "aws", 2.0, NOW - H, end=NOW)
    store.set_budget(provider="aws", monthly=False, limit_usd=5, now=NOW)
    assert store.hold("old-1", "aws", lambda _: 3.0, now=NOW) == 3.0
    [standing] = standings(store.books(), NOW)
    assert (standing.spent, standing.held, standing.free) == pytest.approx((2, 3, 0))
    store.close()
    again = Store(tmp_path / "state.db")  # already v2: opens without migrating twice
    assert again._db.execute("PRAGMA user_version").fetchone()[0] == state._SCHEMA_VERSION
    assert again.ledger("old-1")[0].price_per_hour == 2.0
    again.close()


def test_two_processes_migrating_a_v1_database_at_once_both_succeed(tmp_path: Path) -> None:
    opener = textwrap.dedent(
        """
        import sys, time
        from pathlib import Path
        from gpujobs.state import Billing, Store
        start = float(sys.argv[3])
        while time.time() < start:
            time.sleep(0.005)
        store = Store(Path(sys.argv[1]))
        job = sys.argv[2]
        store.create_job(job_id=job, name=job, spec_json="{}", spec_path="s", runs_dir="r",
                         driver_pid=None)
        store.add_node(job, node_id="n", provider="aws", node_json="{}",
                       billing=Billing("t", "r", False, 1.0, started_at=0.0))
        """
    )
    dbs = [tmp_path / f"state-{index}.db" for index in range(3)]
    for db in dbs:
        make_v1(db)
    start = str(time.time() + 1.5)  # after every child has imported: they open together
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", opener, str(db), job, start], stderr=subprocess.PIPE, text=True
        )
        for db in dbs
        for job in ("x", "y")
    ]
    errors = [proc.communicate(timeout=60)[1] for proc in procs]
    assert [proc.returncode for proc in procs] == [0] * len(procs), errors
    for db in dbs:
        store = Store(db)
        assert {entry.job_id for entry in store.ledger()} == {"x", "y"}
        assert store.count_jobs() == 3
        store.close()
