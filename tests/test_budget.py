"""Money, enforced: the ledger accrues per second at the price frozen at launch, a job whose worst
case does not fit is refused with what would fit, a running job is stopped at its cap with its
checkpoint home, and the user's budget is shared by concurrent launches without a race."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest

from gpujobs.api.controller import Controller
from gpujobs.errors import BudgetRefusedError
from gpujobs.lifecycle.machine import CancelToken, LifecycleConfig
from gpujobs.money.budget import NODE_TIMER_SLACK_S, Allowance, JobCap, Shortfall, job_cap
from gpujobs.paths import HomeLayout
from gpujobs.placement.planner import plan, require_placements
from gpujobs.providers.base import Availability, Offer, Provider
from gpujobs.providers.local import LocalProvider
from gpujobs.spec import JobSpec, parse_spec
from gpujobs.state import Billing, Books, BudgetLimit, JobRecord, JobState, Store
from gpujobs.testing import FakeClock, ScriptedProvider
from tests.test_lifecycle import WORKLOAD, Recorder, assert_torn_down

FAST = LifecycleConfig(poll_interval_s=0.05, stop_grace_s=10, liveness_every_s=0.3)
HOUR = 3600.0


def spec_of(tmp_path: Path, text: str) -> JobSpec:
    return parse_spec(text, label="spec.yaml", base_dir=tmp_path)


def gpu_offer(name: str, price: float, *, region: str = "r1", spot: bool = False) -> Offer:
    return Offer(
        provider="cloud",
        instance_type=name,
        region=region,
        gpu="T4",
        gpus=1,
        cpus=4,
        memory_gb=16,
        price_per_hour=price,
        spot=spot,
        availability=Availability.AVAILABLE,
    )


def new_job(store: Store, job_id: str) -> None:
    store.create_job(
        job_id=job_id, name="n", spec_json="{}", spec_path="/s", runs_dir="/r", driver_pid=None
    )


def billing(price: float, started: float, ends_by: float | None = None) -> Billing:
    return Billing("t", "r1", False, price, started, ends_by)


# -- the ledger -----------------------------------------------------------------------------------
def test_the_ledger_accrues_per_second_until_confirmed_termination(store: Store) -> None:
    new_job(store, "j")
    store.add_node("j", node_id="n0", provider="aws", node_json="{}", billing=billing(3.6, 1000.0))
    [entry] = store.ledger("j")
    assert entry.cost(1000.0) == 0
    assert entry.cost(1001.0) == pytest.approx(0.001), "$3.60/h is a tenth of a cent a second"
    assert entry.cost(1010.0) == pytest.approx(0.01)
    store.mark_node_terminated("j", "n0", now=1100.0)
    [entry] = store.ledger("j")
    assert entry.cost(5000.0) == pytest.approx(0.1), "nothing accrues after the confirmed end"


def test_a_node_never_confirmed_gone_is_billed_until_its_own_timer(store: Store) -> None:
    new_job(store, "j")
    store.add_node(
        "j", node_id="n0", provider="aws", node_json="{}", billing=billing(36.0, 0.0, ends_by=60.0)
    )
    [entry] = store.ledger("j")
    assert entry.cost(30.0) == pytest.approx(0.3)
    assert entry.cost(10_000.0) == pytest.approx(0.6), "the shutdown timer ended it by then"
    assert not entry.live(61.0)


def test_the_price_is_frozen_at_the_first_record(store: Store) -> None:
    new_job(store, "j")
    store.add_node("j", node_id="n0", provider="aws", node_json="{}", billing=billing(1.0, 0.0))
    # wait_ready records the node again; a repriced catalog by then changes nothing.
    store.add_node("j", node_id="n0", provider="aws", node_json="{}", billing=billing(9.0, 50.0))
    [entry] = store.ledger("j")
    assert (entry.price_per_hour, entry.started_at) == (1.0, 0.0)


# -- caps -----------------------------------------------------------------------------------------
def left(amount: float, provider: str | None = None) -> Allowance:
    books = Books([BudgetLimit(provider, False, amount, 0.0)], {}, [], [])
    return Allowance(books, 0.0)


def test_a_job_cap_is_the_tightest_of_hours_max_usd_and_what_is_left() -> None:
    cap = job_cap(max_hours=10, max_usd=None, price_per_hour=2.0, left=None)
    assert cap == JobCap(10, 20.0, "budget.max_hours")
    cap = job_cap(max_hours=None, max_usd=5, price_per_hour=2.0, left=None)
    assert isinstance(cap, JobCap) and cap.hours == 2.5 and cap.by == "budget.max_usd"
    cap = job_cap(max_hours=None, max_usd=None, price_per_hour=2.0, left=left(3).tightest("aws"))
    assert isinstance(cap, JobCap) and cap.hours == 1.5 and cap.usd == 3.0
    assert "your budget (all providers, all time)" in cap.by
    free = job_cap(max_hours=2, max_usd=None, price_per_hour=0.0, left=left(0).tightest("x"))
    assert free == JobCap(2, None, "budget.max_hours"), "a free machine is capped by time only"


def test_a_worst_case_over_what_is_left_is_a_shortfall() -> None:
    short = job_cap(max_hours=10, max_usd=None, price_per_hour=2.0, left=left(15).tightest("aws"))
    assert isinstance(short, Shortfall)
    assert (short.worst_usd, short.left_usd, short.over_by) == (20.0, 15.0, 5.0)
    assert left(15, "gcp").tightest("aws") is None, "a gcp budget does not cover aws"


def scripted(tmp_path: Path, offers: list[Offer]) -> dict[str, Provider]:
    return {"cloud": ScriptedProvider("cloud", tmp_path / "work", offers)}


def test_a_refusal_says_by_how_much_and_what_would_fit(tmp_path: Path, store: Store) -> None:
    store.set_budget(provider=None, monthly=True, limit_usd=10.0)
    providers = scripted(
        tmp_path,
        [
            gpu_offer("ondemand", 2.0),
            gpu_offer("spotty", 0.5, spot=True),
            gpu_offer("elsewhere", 0.8, region="r2"),
        ],
    )
    spec = spec_of(
        tmp_path,
        "name: j\ncommand: 'true'\nproviders: [aws]\nregions: [r1]\nbudget: {max_hours: 8}",
    ).model_copy(update={"providers": ["cloud"]})
    with pytest.raises(BudgetRefusedError) as refused:
        require_placements(spec, providers, Allowance(store.books(), 0.0))
    message = str(refused.value)
    assert "\n" not in message
    assert "cloud/r1/ondemand, costs up to $16.00" in message
    assert "$6.00 more than your budget (all providers, " in message
    assert "budget.max_hours: 5 on that placement" in message
    assert "spot: true (cloud/r1/spot spotty, $4.00 cap)" in message
    assert "regions: add r2 (cloud/r2/elsewhere, $6.40 cap)" in message
    assert "gpujobs budget set 16 --month" in message


def test_a_plan_within_the_budget_shows_the_cap(tmp_path: Path, store: Store) -> None:
    store.set_budget(provider="cloud", monthly=False, limit_usd=3.0)
    spec = spec_of(tmp_path, "name: j\ncommand: 'true'\nbudget: {max_usd: 10}").model_copy(
        update={"providers": ["cloud"]}
    )
    result = plan(spec, scripted(tmp_path, [gpu_offer("a", 2.0)]), Allowance(store.books(), 0.0))
    [placement] = result.placements
    assert placement.cap is not None and placement.cap.usd == 3.0 and placement.cap.hours == 1.5


# -- launches -------------------------------------------------------------------------------------
class GatedClock(FakeClock):
    """Fake time that starts to run only once the workload is up (its first line is logged),
    then a minute per poll: a $6/h cap of $1 is reached in ten polls, not ten minutes."""

    def __init__(self, sink: Recorder) -> None:
        super().__init__()
        self.sink = sink

    def sleep(self, seconds: float) -> None:
        import time

        time.sleep(0.02)
        if b"line 1" in self.sink.logs:
            self.advance(60.0)


def paid_controller(home: HomeLayout, store: Store, clock: FakeClock) -> Controller:
    return Controller(home, store, lambda: {"local": LocalProvider(home.work)}, clock=clock,
                      config=FAST)  # fmt: skip


def test_a_running_job_is_stopped_at_its_cap_with_its_checkpoint_home(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    sink = Recorder()
    clock = GatedClock(sink)
    command = WORKLOAD.format(tail="sleep 120").replace("'", "''")
    spec = spec_of(
        tmp_path, f"name: t\ncommand: '{command}'\ncost_per_hour: 6\nbudget: {{max_usd: 1}}\n"
    )
    controller = paid_controller(home, store, clock)
    record, lock = controller.submit(spec, tmp_path / "spec.yaml", tmp_path / "runs")
    final = controller.drive(record.id, spec, lock, CancelToken(), sink)
    assert final.state is JobState.FAILED
    assert "stopped at its budget cap ($1.00 / 0.17 h, set by budget.max_usd)" in (
        final.error or ""
    )
    assert (final.cap_usd, final.cap_hours) == (pytest.approx(1.0), pytest.approx(1 / 6))
    assert (Path(final.runs_dir) / "on-term.txt").read_text() == "saved\n", "checkpoint home"
    assert_torn_down(home, store, final.id)
    spent = sum(entry.cost(clock.now()) for entry in store.ledger(final.id))
    assert 0.8 <= spent <= 1.0, f"stopped within its cap, a margin before it: ${spent:.2f}"
    assert any(note.startswith("warning: 8") and "of $1.00" in note for note in sink.notes)
    assert not store.books().holds, "the hold is released when the job ends"


def run_on(
    provider: ScriptedProvider,
    clock: FakeClock,
    home: HomeLayout,
    store: Store,
    tmp_path: Path,
    extra: str,
) -> tuple[Controller, JobRecord]:
    """A job that echoes on `provider`, driven to its end."""
    controller = Controller(home, store, lambda: {"cloud": provider}, clock=clock, config=FAST)
    spec = spec_of(tmp_path, f"name: j\ncommand: 'echo hi'\n{extra}").model_copy(
        update={"providers": ["cloud"]}
    )
    record, lock = controller.submit(spec, tmp_path / "spec.yaml", tmp_path / "runs")
    return controller, controller.drive(record.id, spec, lock, CancelToken(), Recorder())


def test_a_global_budget_caps_a_job_without_hours_and_sets_the_node_timer(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    told: list[float | None] = []

    class Recording(ScriptedProvider):
        def for_spec(self, spec: JobSpec) -> ScriptedProvider:
            told.append(spec.budget.max_hours)
            return self

    provider = Recording("cloud", home.work, [gpu_offer("a", 4.0)])
    clock = FakeClock()
    store.set_budget(provider=None, monthly=False, limit_usd=2.0, now=clock.now())
    _, final = run_on(provider, clock, home, store, tmp_path, "")
    assert final.state is JobState.SUCCEEDED, final.error
    assert told[-1] == pytest.approx(0.5), "the node's shutdown timer is set from $2 at $4/h"
    assert (final.cap_usd, final.cap_hours) == (pytest.approx(2.0), pytest.approx(0.5))
    [entry] = store.ledger(final.id)
    assert entry.price_per_hour == 4.0 and entry.ended_at is not None
    assert entry.ends_by == pytest.approx(entry.started_at + 0.5 * HOUR + NODE_TIMER_SLACK_S)


def test_the_price_frozen_at_launch_survives_a_catalog_change(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    provider = ScriptedProvider("cloud", home.work, [gpu_offer("a", 2.0)])
    clock = FakeClock()
    controller, final = run_on(provider, clock, home, store, tmp_path, "budget: {max_hours: 1}\n")
    spec = spec_of(tmp_path, "name: j\ncommand: 'true'\n").model_copy(
        update={"providers": ["cloud"]}
    )
    assert final.state is JobState.SUCCEEDED, final.error
    cost = controller.costs([final.id])[final.id]
    provider._offers = [gpu_offer("a", 8.0)]  # the catalog is repriced after the launch
    clock.advance(HOUR)
    assert controller.plan(spec).placements[0].offer.price_per_hour == 8.0
    [entry] = store.ledger(final.id)
    assert entry.price_per_hour == 2.0 and controller.costs([final.id])[final.id] == pytest.approx(
        cost
    )


# -- no race --------------------------------------------------------------------------------------
def _hold_at_once(db: str, job_id: str, barrier: multiprocessing.synchronize.Barrier) -> None:
    store = Store(Path(db))

    def decide(books: Books) -> float | None:
        cap = job_cap(max_hours=1, max_usd=None, price_per_hour=4.0,
                      left=Allowance(books, 0.0).tightest("aws"))  # fmt: skip
        return None if isinstance(cap, Shortfall) else cap.usd

    barrier.wait()
    held = store.hold(job_id, "aws", decide, now=0.0)
    sys.exit(0 if held is not None else 3)


def test_concurrent_launches_cannot_both_spend_the_last_dollars(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = Store(db)
    store.set_budget(provider=None, monthly=False, limit_usd=10.0, now=0.0)
    jobs = [f"j{i}" for i in range(6)]
    for job in jobs:
        new_job(store, job)
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(len(jobs))
    procs = [context.Process(target=_hold_at_once, args=(str(db), job, barrier)) for job in jobs]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(60)
    codes = sorted(proc.exitcode for proc in procs)
    assert codes == [0, 0, 3, 3, 3, 3], "$10 holds two $4 worst cases, never three"
    assert sum(hold.amount_usd for hold in store.books().holds) == 8.0


def test_two_cli_launches_at_once_share_the_budget(tmp_path: Path) -> None:
    """Real processes, the real CLI: a $1 budget and two $0.72 jobs; one runs, one does not."""
    (tmp_path / "job.yaml").write_text(
        "name: paid\ncommand: 'sleep 2; echo done'\ncost_per_hour: 36\nbudget: {max_hours: 0.02}\n"
    )
    subprocess.run([sys.executable, "-m", "gpujobs", "budget", "set", "1"], check=True)
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "gpujobs", "launch", "job.yaml"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [(proc.wait(timeout=120), proc.stderr.read()) for proc in launches]  # type: ignore[union-attr]
    codes = sorted(code for code, _ in results)
    assert codes[0] == 0 and codes[1] != 0, results
    refused = next(err for code, err in results if code)
    assert "budget" in refused and "Traceback" not in refused
    store = Store(Path(tmp_path / "home" / "state.db"))
    assert len(store.ledger()) == 1, "only one job ever got a node"
