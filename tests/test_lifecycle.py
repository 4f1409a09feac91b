"""The launch state machine on the local provider: real processes, real files, injected faults."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from gpujobs.api.controller import Controller
from gpujobs.errors import (
    NoCapacityError,
    NoPlacementError,
    ProviderAuthError,
    ProvisioningError,
    QuotaExceededError,
    TransportError,
)
from gpujobs.lifecycle.machine import CancelToken, LifecycleConfig
from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Offer, Provider
from gpujobs.providers.local import LocalProvider
from gpujobs.remote.connect import connect_node
from gpujobs.spec import JobSpec, parse_spec
from gpujobs.state import JobState, Store
from gpujobs.testing import FaultyTransport, RecordingProvider, ScriptedProvider

FAST = LifecycleConfig(poll_interval_s=0.05, stop_grace_s=10, liveness_every_s=0.3)
HAPPY_PATH = [
    JobState.PENDING,
    JobState.PLANNING,
    JobState.PROVISIONING,
    JobState.SETTING_UP,
    JobState.SYNCING,
    JobState.RUNNING,
    JobState.COLLECTING,
    JobState.TEARING_DOWN,
    JobState.SUCCEEDED,
]
# Writes a checkpoint, logs three lines; on TERM writes a "saved" checkpoint and exits 0,
# as the bundled workloads do.
WORKLOAD = (
    'trap \'echo saved > "$GPUJOBS_CKPT_DIR/on-term.txt"; echo "got TERM"; exit 0\' TERM; '
    'echo first > "$GPUJOBS_CKPT_DIR/ckpt-1.txt"; '
    'for i in 1 2 3; do echo "line $i"; sleep 0.1; done; {tail}'
)


def spec_of(text: str, base: Path) -> JobSpec:
    return parse_spec(text, label="spec.yaml", base_dir=base)


def command_spec(tmp_path: Path, tail: str = "exit 0", extra: str = "") -> JobSpec:
    command = WORKLOAD.format(tail=tail).replace("'", "''")
    return spec_of(f"name: t\ncommand: '{command}'\n{extra}", tmp_path)


class Recorder:
    """An EventSink that keeps what it is told."""

    def __init__(self) -> None:
        self.states: list[JobState] = []
        self.logs = bytearray()
        self.notes: list[str] = []

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self.states.append(state)

    def log(self, data: bytes) -> None:
        self.logs += data

    def note(self, message: str) -> None:
        self.notes.append(message)

    def progress(self, label: str, done: int, total: int) -> None:
        return None


def controller_with(home: HomeLayout, store: Store, providers: dict[str, Provider]) -> Controller:
    return Controller(home, store, lambda: providers, config=FAST)


def launch(
    controller: Controller,
    spec: JobSpec,
    tmp_path: Path,
    cancel: CancelToken | None = None,
    sink: Recorder | None = None,
):
    record, lock = controller.submit(spec, tmp_path / "spec.yaml", tmp_path / "runs")
    final = controller.drive(record.id, spec, lock, cancel or CancelToken(), sink or Recorder())
    return final


def assert_torn_down(home: HomeLayout, store: Store, job_id: str) -> None:
    assert not (home.work / job_id).exists(), "the work directory is removed"
    assert all(node.terminated_at is not None for node in store.nodes(job_id))


def test_success_walks_every_state_and_brings_checkpoints_home(home, store, tmp_path) -> None:
    sink = Recorder()
    controller = controller_with(home, store, {"local": LocalProvider(home.work)})
    final = launch(controller, command_spec(tmp_path), tmp_path, sink=sink)
    assert final.state is JobState.SUCCEEDED and final.exit_code == 0
    assert [
        event.state for event in store.events(final.id) if event.message in ("", "job created")
    ] == HAPPY_PATH
    assert sink.states == HAPPY_PATH[1:]
    assert b"line 1\nline 2\nline 3\n" in bytes(sink.logs)
    runs = Path(final.runs_dir)
    assert (runs / "ckpt-1.txt").read_text() == "first\n"
    assert b"line 3" in (runs / "job.log").read_bytes()
    assert home.log_file(final.id).read_bytes() == bytes(sink.logs), "the log copy is complete"
    assert_torn_down(home, store, final.id)


def test_a_failing_workload_is_failed_with_exit_code_and_log_tail(home, store, tmp_path) -> None:
    controller = controller_with(home, store, {"local": LocalProvider(home.work)})
    final = launch(controller, command_spec(tmp_path, tail='echo "boom" >&2; exit 3'), tmp_path)
    assert final.state is JobState.FAILED and final.exit_code == 3
    assert final.error is not None and "exited with code 3" in final.error and "boom" in final.error
    assert (Path(final.runs_dir) / "ckpt-1.txt").exists(), "what was saved still comes home"
    assert_torn_down(home, store, final.id)


def test_cancel_stops_gracefully_and_brings_the_last_checkpoint_home(home, store, tmp_path) -> None:
    controller = controller_with(home, store, {"local": LocalProvider(home.work)})
    cancel, sink = CancelToken(), Recorder()

    def cancel_once_running() -> None:
        deadline = time.monotonic() + 20
        while b"line 2" not in sink.logs and time.monotonic() < deadline:
            time.sleep(0.02)
        cancel.cancel("cancelled by test")

    threading.Thread(target=cancel_once_running, daemon=True).start()
    final = launch(controller, command_spec(tmp_path, tail="sleep 30"), tmp_path, cancel, sink)
    assert final.state is JobState.CANCELLED
    assert (Path(final.runs_dir) / "on-term.txt").read_text() == "saved\n"
    assert b"got TERM" in bytes(sink.logs)
    assert_torn_down(home, store, final.id)


def test_max_hours_is_enforced_by_the_driver(home, store, tmp_path) -> None:
    controller = controller_with(home, store, {"local": LocalProvider(home.work)})
    spec = command_spec(tmp_path, tail="sleep 60", extra="budget: {max_hours: 0.0005}\n")
    started = time.monotonic()
    final = launch(controller, spec, tmp_path)
    assert time.monotonic() - started < 20
    assert final.state is JobState.FAILED and "budget.max_hours" in (final.error or "")
    assert (Path(final.runs_dir) / "on-term.txt").exists()
    assert_torn_down(home, store, final.id)


def test_dataset_is_synced_to_the_node(home, store, tmp_path) -> None:
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.bin").write_bytes(os.urandom(5000))
    (data / "sub" / "b.txt").write_text("b")
    spec = spec_of(
        "name: t\ndataset: {source: ./data}\n"
        'command: \'cat "$GPUJOBS_DATA_DIR/sub/b.txt"; ls "$GPUJOBS_DATA_DIR"\'\n',
        tmp_path,
    )
    sink = Recorder()
    final = launch(
        controller_with(home, store, {"local": LocalProvider(home.work)}), spec, tmp_path, sink=sink
    )
    assert final.state is JobState.SUCCEEDED
    assert bytes(sink.logs) == b"ba.bin\nsub\n"
    assert any("dataset: 2 files, 5001 bytes, 2 sent (files)" in note for note in sink.notes)


@pytest.mark.parametrize("method", ["offers", "provision", "wait_ready"])
def test_a_provider_exception_in_any_step_still_tears_down(home, store, tmp_path, method) -> None:
    provider = RecordingProvider(LocalProvider(home.work), fail_on={method: RuntimeError("kaboom")})
    controller = controller_with(home, store, {"local": provider})
    with pytest.raises(RuntimeError, match="kaboom"):
        launch(controller, command_spec(tmp_path), tmp_path)
    record = store.jobs()[0]
    assert record.state is JobState.FAILED and "kaboom" in (record.error or "")
    assert store.events(record.id)[-2].state is JobState.TEARING_DOWN
    assert not any((home.work).iterdir()), "nothing is left on the node"


@pytest.mark.parametrize(
    ("method", "state"),
    [
        ("run", JobState.SETTING_UP),
        ("put", JobState.SETTING_UP),
        ("start", JobState.RUNNING),
        ("read", JobState.RUNNING),
        ("list_files", JobState.SETTING_UP),
    ],
)
def test_a_transport_failure_in_any_step_still_tears_down(home, store, tmp_path, method, state):
    provider = RecordingProvider(LocalProvider(home.work))
    controller = controller_with(home, store, {"local": provider})
    lifecycle_connect = lambda node: FaultyTransport(  # noqa: E731
        connect_node(node, home), fail_on={method: TransportError(f"{method} dropped")}
    )
    controller.lifecycle = _with_connect(controller.lifecycle, lifecycle_connect)
    final = launch(controller, command_spec(tmp_path), tmp_path)
    assert final.state is JobState.FAILED and f"{method} dropped" in (final.error or "")
    states = [event.state for event in store.events(final.id)]
    assert state in states
    assert provider.called("terminate") == 1
    assert_torn_down(home, store, final.id)


def _with_connect(make_lifecycle, connect_to):
    def patched(sink=None, spec=None):
        lifecycle = make_lifecycle(sink, spec)
        lifecycle.connect = connect_to
        return lifecycle

    return patched


def offer(provider: str, instance_type: str, price: float) -> Offer:
    return Offer(
        provider=provider,
        instance_type=instance_type,
        region="r1",
        cpus=2,
        memory_gb=4,
        price_per_hour=price,
        gpu="T4",
        gpus=1,
    )


def test_capacity_and_quota_errors_fail_over_to_the_next_placement(home, store, tmp_path) -> None:
    cloud = ScriptedProvider(
        "cloud",
        home.work,
        [offer("cloud", "cheap", 0.1), offer("cloud", "mid", 0.2), offer("cloud", "dear", 0.5)],
        provision_errors={
            "cheap": NoCapacityError("no T4 in r1 now"),
            "mid": QuotaExceededError("quota NVIDIA_T4_GPUS is 0"),
        },
    )
    spec = command_spec(tmp_path, extra="resources: {gpu: T4}\n")
    spec = spec.model_copy(update={"providers": ["cloud"]})
    sink = Recorder()
    final = launch(controller_with(home, store, {"cloud": cloud}), spec, tmp_path, sink=sink)
    assert final.state is JobState.SUCCEEDED
    assert cloud.provisioned == ["cheap", "mid", "dear"]
    assert final.placement == "cloud/r1/dear"
    assert any("no T4 in r1 now; trying the next placement" in note for note in sink.notes)


def test_when_every_placement_fails_the_error_lists_each(home, store, tmp_path) -> None:
    cloud = ScriptedProvider(
        "cloud",
        home.work,
        [offer("cloud", "a", 0.1), offer("cloud", "b", 0.2)],
        provision_errors={"a": NoCapacityError("none in r1"), "b": NoCapacityError("none in r2")},
    )
    spec = command_spec(tmp_path).model_copy(update={"providers": ["cloud"]})
    final = launch(controller_with(home, store, {"cloud": cloud}), spec, tmp_path)
    assert final.state is JobState.FAILED
    assert "cloud/r1/a: none in r1" in final.error and "cloud/r1/b: none in r2" in final.error


def test_auth_errors_stop_at_once(home, store, tmp_path) -> None:
    cloud = ScriptedProvider(
        "cloud",
        home.work,
        [offer("cloud", "a", 0.1), offer("cloud", "b", 0.2)],
        provision_errors={"a": ProviderAuthError("AWS_ACCESS_KEY_ID was refused")},
    )
    spec = command_spec(tmp_path).model_copy(update={"providers": ["cloud"]})
    final = launch(controller_with(home, store, {"cloud": cloud}), spec, tmp_path)
    assert final.state is JobState.FAILED and "AWS_ACCESS_KEY_ID" in final.error
    assert cloud.provisioned == ["a"]


def test_no_placement_is_bad_input_with_every_reason(home, store, tmp_path) -> None:
    spec = command_spec(tmp_path, extra="resources: {gpu: H100, gpus: 8}\n")
    controller = controller_with(home, store, {"local": LocalProvider(home.work)})
    with pytest.raises(NoPlacementError, match=r"local/this-machine: has .*H100"):
        controller.preflight(spec)
    assert store.count_jobs() == 0


def test_local_runs_one_node_only(home, store, tmp_path) -> None:
    spec = command_spec(tmp_path, extra="nodes: 2\n")
    controller = controller_with(home, store, {"local": LocalProvider(home.work)})
    with pytest.raises(NoPlacementError, match="runs at most 1 node"):
        controller.preflight(spec)


def test_provision_failure_that_is_not_capacity_does_not_fail_over(home, store, tmp_path) -> None:
    cloud = ScriptedProvider(
        "cloud",
        home.work,
        [offer("cloud", "a", 0.1), offer("cloud", "b", 0.2)],
        provision_errors={"a": ProvisioningError("image not found")},
    )
    spec = command_spec(tmp_path).model_copy(update={"providers": ["cloud"]})
    final = launch(controller_with(home, store, {"cloud": cloud}), spec, tmp_path)
    assert final.state is JobState.FAILED and "image not found" in final.error
    assert cloud.provisioned == ["a"]


def test_a_dataset_sync_failure_tears_down(home, store, tmp_path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.bin").write_bytes(b"x" * 100)
    spec = spec_of("name: t\ndataset: {source: ./data}\ncommand: 'true'\n", tmp_path)
    provider = RecordingProvider(LocalProvider(home.work))
    controller = controller_with(home, store, {"local": provider})
    controller.lifecycle = _with_connect(
        controller.lifecycle,
        lambda node: FaultyTransport(
            connect_node(node, home), fail_on={"put": TransportError("link down")}
        ),
    )
    final = launch(controller, spec, tmp_path)
    assert final.state is JobState.FAILED and "link down" in final.error
    assert [e.state for e in store.events(final.id)][-3:] == [
        JobState.SYNCING,
        JobState.TEARING_DOWN,
        JobState.FAILED,
    ]
    assert provider.called("terminate") == 1
    assert_torn_down(home, store, final.id)


def test_a_cancel_before_anything_runs_creates_nothing(home, store, tmp_path) -> None:
    provider = RecordingProvider(LocalProvider(home.work))
    cancel = CancelToken()
    cancel.cancel("changed my mind")
    final = launch(
        controller_with(home, store, {"local": provider}), command_spec(tmp_path), tmp_path, cancel
    )
    assert final.state is JobState.CANCELLED and final.error == "changed my mind"
    assert provider.called("provision") == 0
