"""A node lost while its job runs: the job goes RECOVERING, is provisioned again elsewhere, gets
its last checkpoint back and continues from it. Real processes and files on the local machine;
the "cloud" is a ScriptedProvider whose nodes are local work folders, which it can take back as
a spot market does (SIGKILL, then it reports the loss)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from gpujobs.api.controller import Controller
from gpujobs.errors import ConnectionLostError
from gpujobs.lifecycle.machine import CancelToken, LifecycleConfig
from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Node, Offer
from gpujobs.remote.connect import connect_node
from gpujobs.remote.transport import Transport
from gpujobs.spec import JobSpec, parse_spec
from gpujobs.state import JobState, Store
from gpujobs.testing import FaultyTransport, ScriptedProvider
from tests.conftest import gpujobs_cli
from tests.test_lifecycle import Recorder

FAST = LifecycleConfig(
    poll_interval_s=0.05, stop_grace_s=10, liveness_every_s=0.3, loss_check_every_s=0.2
)
# Counts to 30, resuming from the count in its checkpoint, one line and one checkpoint a step.
COUNTER = (
    'n=$(cat "$GPUJOBS_CKPT_DIR/count.txt" 2>/dev/null || echo 0); echo "start at $n"; '
    'while [ "$n" -lt 30 ]; do n=$((n+1)); echo "step $n"; '
    'echo "$n" > "$GPUJOBS_CKPT_DIR/count.tmp"; mv "$GPUJOBS_CKPT_DIR/count.tmp" '
    '"$GPUJOBS_CKPT_DIR/count.txt"; sleep 0.1; done; echo finished'
)


def spot_offer(zone: str, price: float) -> Offer:
    return Offer(
        provider="cloud",
        instance_type="g4dn.xlarge",
        region="r1",
        zone=zone,
        cpus=4,
        memory_gb=16,
        price_per_hour=price,
        gpu="T4",
        gpus=1,
        spot=True,
    )


def counter_spec(tmp_path: Path, extra: str = "") -> JobSpec:
    text = (
        f"name: counter\ncommand: '{COUNTER}'\nspot: true\nresources: {{gpu: T4}}\n"
        f"checkpoints: {{every_minutes: 0.005}}\n{extra}"
    )
    spec = parse_spec(text, label="spec.yaml", base_dir=tmp_path)
    return spec.model_copy(update={"providers": ["cloud"]})


def checkpoint_count(runs: Path) -> int:
    try:
        return int((runs / "count.txt").read_text())
    except (OSError, ValueError):
        return 0


class Preempter:
    """Takes the job's first node back once a checkpoint of at least `after` steps is home."""

    def __init__(self, store: Store, take: Callable[[Node], None], after: int = 5) -> None:
        self.store, self.take, self.after = store, take, after
        self.taken: list[Node] = []
        self.count_home = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            jobs = self.store.jobs()
            if not jobs or jobs[0].state is not JobState.RUNNING:
                continue
            self.count_home = checkpoint_count(Path(jobs[0].runs_dir))
            if self.count_home < self.after:
                continue
            rows = [row for row in self.store.nodes(jobs[0].id) if row.terminated_at is None]
            node = Node.model_validate_json(rows[0].node_json)
            self.take(node)
            self.taken.append(node)
            return

    def __enter__(self) -> Preempter:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop.set()
        self.thread.join(timeout=10)


def run_job(controller: Controller, spec: JobSpec, tmp_path: Path, sink: Recorder):
    record, lock = controller.submit(spec, tmp_path / "spec.yaml", tmp_path / "runs")
    return controller.drive(record.id, spec, lock, CancelToken(), sink)


def steps_in(log: str) -> list[int]:
    return [int(line.split()[1]) for line in log.splitlines() if line.startswith("step ")]


def test_a_preempted_spot_node_is_replaced_and_the_job_resumes_from_its_checkpoint(
    home: HomeLayout, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cloud = ScriptedProvider("cloud", home.work, [spot_offer("a", 0.2), spot_offer("b", 0.3)])
    controller = Controller(home, store, lambda: {"cloud": cloud}, config=FAST)
    sink = Recorder()
    with Preempter(store, cloud.preempt) as preempter:
        final = run_job(controller, counter_spec(tmp_path), tmp_path, sink)
    assert preempter.taken, "the node was taken back mid-run"
    assert final.state is JobState.SUCCEEDED, final.error
    assert final.restarts == 1
    assert final.placement == "cloud/b/spot g4dn.xlarge", "the lost placement cools down"
    assert cloud.provisioned == ["g4dn.xlarge", "g4dn.xlarge"]
    assert sink.states[sink.states.index(JobState.RECOVERING) :][:2] == [
        JobState.RECOVERING,
        JobState.PROVISIONING,
    ]
    recovering = [e for e in store.events(final.id) if e.state is JobState.RECOVERING]
    assert "taken back" in recovering[0].message

    log = (Path(final.runs_dir) / "job.log").read_text()
    resumed_at = int(log.split("start at ")[-1].split()[0])
    assert resumed_at >= preempter.after, "the new node started from the checkpoint home"
    steps = steps_in(log)
    assert steps[-(30 - resumed_at) :] == list(range(resumed_at + 1, 31))
    assert log.count("start at 0") == 1 and log.rstrip().endswith("finished")
    assert checkpoint_count(Path(final.runs_dir)) == 30

    ledger = store.ledger(final.id)
    assert len(ledger) == 2, "the ledger bills both nodes"
    assert [entry.price_per_hour for entry in ledger] == [0.2, 0.3]
    assert all(entry.ended_at is not None for entry in ledger)
    assert all(node.terminated_at is not None for node in store.nodes(final.id))
    assert not (home.work / final.id).exists()

    shown = json.loads(gpujobs_cli("status", "--json", final.id).stdout)
    assert shown["restarts"] == 1
    monkeypatch.setenv("COLUMNS", "200")
    assert "SUCCEEDED (restarted 1x)" in gpujobs_cli("status").stdout


def test_with_no_restarts_allowed_the_job_fails_and_keeps_its_checkpoint(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    cloud = ScriptedProvider("cloud", home.work, [spot_offer("a", 0.2), spot_offer("b", 0.3)])
    controller = Controller(home, store, lambda: {"cloud": cloud}, config=FAST)
    spec = counter_spec(tmp_path, "recovery: {max_restarts: 0}\n")
    with Preempter(store, cloud.preempt) as preempter:
        final = run_job(controller, spec, tmp_path, Recorder())
    assert final.state is JobState.FAILED
    assert "taken back" in final.error and "recovery.max_restarts is 0" in final.error
    assert final.restarts == 0 and cloud.provisioned == ["g4dn.xlarge"]
    assert checkpoint_count(Path(final.runs_dir)) >= preempter.after, "the checkpoint stays home"
    assert all(node.terminated_at is not None for node in store.nodes(final.id))
    assert not (home.work / final.id).exists()


def test_a_node_that_stops_answering_is_replaced_on_the_same_placement_after_its_cooldown(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    """SSH silence, no word from the provider: the node counts as lost once its transport
    gives up. With one placement only, the job waits out the cool-down and returns there."""
    cloud = ScriptedProvider("cloud", home.work, [spot_offer("a", 0.2)])
    silenced: dict[str, FaultyTransport] = {}

    def connect(node: Node) -> Transport:
        transport = FaultyTransport(connect_node(node, home))
        silenced.setdefault(node.node_id, transport)
        return transport

    def go_silent(node: Node) -> None:
        lost = ConnectionLostError(f"lost {node.host} and could not reconnect within 300s")
        silenced[node.node_id].fail_on.update(read=lost, run=lost)
        cloud.preempt(node)  # the machine is gone too, but the provider does not say so
        cloud.taken_back.clear()

    config = LifecycleConfig(**{**FAST.__dict__, "recovery_cooldown_s": 1.0})
    controller = Controller(home, store, lambda: {"cloud": cloud}, config=config, connect=connect)
    sink = Recorder()
    with Preempter(store, go_silent, after=3):
        final = run_job(controller, counter_spec(tmp_path), tmp_path, sink)
    assert final.state is JobState.SUCCEEDED, final.error
    assert final.restarts == 1 and final.placement == "cloud/a/spot g4dn.xlarge"
    recovering = [e for e in store.events(final.id) if e.state is JobState.RECOVERING]
    assert "stopped answering" in recovering[0].message
    assert any("trying again in" in note for note in sink.notes), "it waited for the cool-down"
    assert checkpoint_count(Path(final.runs_dir)) == 30
    assert [entry.node_id for entry in store.ledger(final.id)] == [
        f"{final.id}-0",
        f"{final.id}-0-r1",
    ]


def test_a_restart_runs_on_what_is_left_of_the_jobs_cap(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    cloud = ScriptedProvider("cloud", home.work, [spot_offer("a", 360), spot_offer("b", 360)])
    controller = Controller(home, store, lambda: {"cloud": cloud}, config=FAST)
    sink = Recorder()
    spec = counter_spec(tmp_path, "budget: {max_usd: 10}\n")  # 100 s at $360/h
    with Preempter(store, cloud.preempt, after=10):
        final = run_job(controller, spec, tmp_path, sink)
    assert final.state is JobState.SUCCEEDED, final.error
    assert final.cap_usd == pytest.approx(10), "the job's cap stays the one it launched under"
    first, _ = store.ledger(final.id)
    spent_before = first.cost(first.ended_at or 0)
    [restart_note] = [n for n in sink.notes if n.startswith("provisioning cloud/b")]
    assert spent_before > 0.05
    left = float(restart_note.split("left of its cap: $")[1].split(" ")[0])
    assert left == pytest.approx(10 - spent_before, abs=0.01), restart_note
