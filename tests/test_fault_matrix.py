"""The fault matrix: each provider x {throttling, no capacity, no quota, bad credentials, a call
that hangs, an error in provisioning, waiting and teardown}, a transport failure at each step,
SSH dropped during the dataset sync, the log stream and the checkpoint pull, kill -9 of the driver
and Ctrl-C/SIGINT. Every scenario asserts the final state (and that a failure names its cause),
that nothing tagged is left on the mocked cloud (nor a key, a work folder or a process of the
job), and that nothing was lost (every log line exactly once, the last checkpoint home). A node
taken back mid-run (a reclaimed spot instance, a preempted VM, a machine turned off) must be
replaced and the job resumed from its checkpoint: there, lines since the last checkpoint home may
come twice, but none may be missing.

A scenario is one `Scenario` entry in SCENARIOS; the one parametrized test runs them all. At the
end of the run a table (scenario, outcome, leaked, lost) is printed in pytest's summary. A row
names its provider, an injector (a function of the World that arms a fault in the mocked cloud,
the transport or the driver), the final state it expects and the words its error must hold;
optional hooks act during the run (`when_logged`, `during`) or check more afterwards (`after`).
A preemption row, for instance, is one entry:

    Scenario("gcp-preempted-mid-run", "gcp: spot VM preempted mid-run", "gcp",
             when_logged(3, preempt_the_node), after=events_say("RECOVERING"))

A row that shows a product bug carries `bug=...`: it runs as xfail(strict=True).
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpujobs.errors import TransportError
from gpujobs.lifecycle.machine import CancelToken
from gpujobs.providers.base import Node, Provider
from gpujobs.retry import ATTEMPTS
from gpujobs.state import JobRecord, JobState
from gpujobs.testing.aws import reclaim_spot_instance
from gpujobs.testing.ssh import CuttingProxy
from tests.conftest import gpujobs_cli
from tests.fault_matrix_support import (
    ArmedProvider,
    Cutter,
    StepFaultTransport,
    Workload,
    World,
    format_table,
    gpujobs_popen,
    lost_items,
    make_world,
    process_gone,
    wait_until,
)

SUCCEEDED, FAILED, CANCELLED = JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED
ROWS: list[tuple[str, str, str, str]] = []


# -- what a scenario is ----------------------------------------------------------------------------
def no_fault(world: World) -> None:
    return None


def drive_in_process(world: World, scenario: Scenario) -> JobRecord:
    spec = world.spec(scenario.workload, dataset=scenario.dataset, extra=scenario.spec_extra)
    with scenario.during(world):
        return world.launch(spec)


@dataclass(frozen=True)
class Scenario:
    id: str  # the pytest id
    name: str  # the table's words
    provider: str  # aws, gcp, paperspace, local
    inject: Callable[[World], None] = no_fault
    expect: JobState = SUCCEEDED
    cause: tuple[str, ...] = ()  # words the job's error must hold
    lost: str = "complete"  # complete | cancelled | prefix | none (see lost_items)
    placement: str | None = None
    workload: Workload = field(default_factory=Workload)
    dataset: bool = False
    spec_extra: str = ""  # YAML appended to the spec
    during: Callable[[World], contextlib.AbstractContextManager[Any]] = lambda world: (
        contextlib.nullcontext()
    )
    drive: Callable[[World, Scenario], JobRecord | None] = drive_in_process
    after: Callable[[World, JobRecord], None] | None = None  # extra checks, cleanup
    may_raise: bool = False  # a bug in a provider may reach the CLI, once the job is recorded
    bug: str = ""  # a product bug this scenario shows: xfail(strict) with this reason
    # Refused before a job exists (the drive returns None): words its one error line must hold.
    refused: tuple[str, ...] = ()


# -- injectors and checks, by cloud ----------------------------------------------------------------
def calls(world: World, operation: str, region: str | None = None) -> int:
    """How often the mocked cloud was asked `operation` (AWS name, GCP method id, or
    Paperspace "METHOD /route")."""
    if world.aws is not None:
        return int(world.aws.called(operation, region))
    if world.gcp is not None:
        return len(world.gcp.calls(operation))
    return len(world.ps.calls(operation))


def expect_calls(
    operation: str, count: int, *, at_least: bool = False, region: str | None = None
) -> Callable[[World, JobRecord], None]:
    def check(world: World, record: JobRecord) -> None:
        made = calls(world, operation, region)
        where = f" in {region}" if region else ""
        assert (made >= count) if at_least else (made == count), (
            f"{operation} called {made}x{where}, expected {'>= ' if at_least else ''}{count}"
        )

    return check


def events_say(*words: str) -> Callable[[World, JobRecord], None]:
    def check(world: World, record: JobRecord) -> None:
        said = " ".join(event.message for event in world.store.events(record.id))
        for word in words:
            assert word in said, f"the job's events do not say {word!r}"

    return check


def both(*checks: Callable[[World, JobRecord], None]) -> Callable[[World, JobRecord], None]:
    def check(world: World, record: JobRecord) -> None:
        for each in checks:
            each(world, record)

    return check


def together(*injectors: Callable[[World], None]) -> Callable[[World], None]:
    def inject(world: World) -> None:
        for each in injectors:
            each(world)

    return inject


def down_cleans_up(world: World, record: JobRecord) -> None:
    """Teardown gave up: the job says to run `gpujobs down`, something is really left, and
    once the cloud answers again `gpujobs down` removes it."""
    assert world.cloud_leftovers(), "teardown failed, so the node should still be there"
    world.clear_faults()
    assert world.controller is not None
    _, message = world.controller.down(record.id)
    assert message.startswith("tore down"), message
    world.notes.append("then `down` cleaned up")
    assert f"gpujobs down {record.id}" in (record.error or ""), "no `gpujobs down` hint"


def arm_at(method: str, arm: Callable[[World], None]) -> Callable[[World], None]:
    """Inject `arm`'s API fault when the provider's `method` is called (not before)."""

    def inject(world: World) -> None:
        world.wrap_provider = lambda provider: ArmedProvider(  # type: ignore[return-value]
            provider, method, lambda: arm(world)
        )

    return inject


class TerminateBug:
    """A provider whose first `terminate` raises a plain exception (a bug, not a cloud error);
    the copies `for_spec` makes share that one shot."""

    def __init__(self, inner: Provider, shots: list[int] | None = None) -> None:
        self._inner, self.name = inner, inner.name
        self.shots = [1] if shots is None else shots

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def for_spec(self, spec: Any) -> Provider:
        inner = self._inner.for_spec(spec)  # type: ignore[attr-defined]
        return TerminateBug(inner, self.shots)  # type: ignore[return-value]

    def terminate(self, nodes: list[Any]) -> None:
        if self.shots:
            self.shots.pop()
            raise KeyError("injected: a bug in terminate")
        self._inner.terminate(nodes)


# AWS (moto + AwsFakes at boto3's boundary).
def aws_fail(operation: str, error: tuple[str, str], **options: Any) -> Callable[[World], None]:
    def inject(world: World) -> None:
        world.aws.fail(operation, error, **options)

    return inject


def aws_quota_zero_in_first_region(world: World) -> None:
    world.aws.applied_quotas[("us-east-1", "L-DB2E81BA")] = 0


def aws_throttle(world: World) -> None:
    from gpujobs.testing.aws import THROTTLED

    world.aws.fail("RunInstances", THROTTLED, times=2)
    world.aws.fail("DescribeInstances", THROTTLED, times=1)


def aws_no_capacity(region: str | None) -> Callable[[World], None]:
    from gpujobs.testing.aws import NO_CAPACITY

    return aws_fail("RunInstances", NO_CAPACITY, times=-1, region=region)


def aws_step_fault(state: JobState, method: str) -> Callable[[World], None]:
    def inject(world: World) -> None:
        assert world.nodes is not None
        error = TransportError(f"injected: {method} failed for good")
        world.nodes.wrap = lambda transport: StepFaultTransport(  # type: ignore[return-value]
            transport, world.watcher, state, method, error, world.fired
        )

    return inject


def fired(world: World, record: JobRecord) -> None:
    assert world.fired, "the transport fault never fired"


# GCP (the fake Compute API behind the real client).
def gcp_throttle(world: World) -> None:
    from gpujobs.testing.gcp import unavailable

    world.gcp.throttle("instances.insert", times=2)
    world.gcp.fail_next("zoneOperations.get", unavailable(), times=2)


def gcp_no_capacity(*zones: str) -> Callable[[World], None]:
    def inject(world: World) -> None:
        for zone in zones:
            world.gcp.no_capacity(zone)

    return inject


def gcp_http_error(method: str, message: str, **options: Any) -> Callable[[World], None]:
    from gpujobs.testing.gcp import FakeHttpError

    error = FakeHttpError(400, "invalid", message, "INVALID_ARGUMENT")
    return lambda world: world.gcp.fail_next(method, error, **options)


def gcp_deny_deletes(times: int | None) -> Callable[[World], None]:
    from gpujobs.testing.gcp import permission_denied

    denied = permission_denied("compute.instances.delete")
    return lambda world: world.gcp.fail_next("instances.delete", denied, times=times)


# Paperspace (respx serving the API's shapes).
def ps_fail(key: str, **options: Any) -> Callable[[World], None]:
    return lambda world: world.ps.fail(key, **options)


def ps_unavailable(*regions: str) -> Callable[[World], None]:
    def inject(world: World) -> None:
        for region in regions:
            world.ps.unavailable.add(("A4000", region))

    return inject


def ps_rotate_key(world: World) -> None:
    world.ps.api_key = "a-key-this-machine-does-not-have"


# -- cutting SSH connections -----------------------------------------------------------------------
def cutting(
    state: JobState, *, times: int, every_s: float, rate: float | None = None
) -> Callable[[World], contextlib.AbstractContextManager[Any]]:
    @contextlib.contextmanager
    def during(world: World) -> Any:
        assert world.nodes is not None
        with CuttingProxy(world.sshd.port) as proxy:
            world.nodes.port = proxy.port
            with Cutter(proxy, world.watcher, state, times=times, every_s=every_s, rate=rate) as c:
                yield
            world.notes.append(f"{c.landed} cut(s) in {state.value}")
            world.cuts = c.landed
            world.nodes.close_all()

    return during


def cuts_landed(minimum: int) -> Callable[[World, JobRecord], None]:
    def check(world: World, record: JobRecord) -> None:
        assert world.cuts >= minimum, f"only {world.cuts} cut(s) landed in the step"

    return check


def with_dataset(world: World) -> None:
    world.make_dataset()


# -- the driver dies, Ctrl-C -----------------------------------------------------------------------
class DriverKilled(BaseException):
    """What kill -9 is to the driver: it stops dead, nothing of its own runs after (no
    teardown, no final state). Not an Exception, so nothing in gpujobs catches it."""


def kill_9(world: World) -> None:
    raise DriverKilled()


def attach_after_the_driver_died(world: World, scenario: Scenario) -> JobRecord:
    """The driver dies (see `kill_9`) with the job running; `gpujobs attach` adopts it."""
    spec = world.spec(scenario.workload)
    with pytest.raises(DriverKilled):
        world.launch(spec)
    assert world.nodes is not None and world.controller is not None
    world.nodes.close_all()  # the dead driver's connections go with it
    [job] = world.store.jobs()
    assert job.state is JobState.RUNNING, "the driver died with the job running"
    world.notes.append("attached")
    return world.controller.attach(job.id, CancelToken(), world.watcher)


def when_logged(line: int, action: Callable[[World], None]) -> Callable[[World], None]:
    """An injector that acts mid-run: `action(world)` runs once, in the driver's thread, as
    soon as `line N` of the workload reaches this machine (e.g. a Ctrl-C, or a preemption:
    `when_logged(3, lambda world: world.gcp.preempt(zone, name))`)."""

    def inject(world: World) -> None:
        def hook(logs: bytes) -> None:
            if f"line {line}\n".encode() in logs:
                world.watcher.on_log.remove(hook)
                action(world)

        world.watcher.on_log.append(hook)

    return inject


def ctrl_c(world: World) -> None:
    """What the CLI's SIGINT handler does: cancel the job's token."""
    world.cancel.cancel("cancelled by SIGINT")


def cli_kill9_then_attach(world: World, scenario: Scenario) -> JobRecord:
    """The real CLI: `launch --detach`, kill -9 of its driver process, `gpujobs attach`."""
    world.spec(scenario.workload)
    launched = gpujobs_cli("launch", "--detach", "spec.yaml")
    assert launched.returncode == 0, launched.stderr
    job_id = launched.stdout.strip()
    log = world.home.log_file(job_id)
    wait_until(lambda: log.exists() and b"line 3\n" in log.read_bytes(), "the job to run")
    driver = world.store.job(job_id).driver_pid
    assert driver is not None
    os.kill(driver, signal.SIGKILL)
    wait_until(lambda: process_gone(driver), "the driver to die")
    assert not world.store.job(job_id).state.is_terminal
    attached = gpujobs_cli("attach", job_id)
    assert attached.returncode == 0, attached.stderr
    world.notes.append("attached")
    return world.store.job(job_id)


def cli_sigint(world: World, scenario: Scenario) -> JobRecord:
    """The real CLI in the foreground, sent SIGINT once `line 3` is logged."""
    world.spec(scenario.workload)
    launch = gpujobs_popen("launch", "spec.yaml")
    try:
        wait_until(lambda: len(world.store.jobs()) == 1, "the job to be recorded")
        [job] = world.store.jobs()
        log = world.home.log_file(job.id)
        wait_until(lambda: log.exists() and b"line 3\n" in log.read_bytes(), "the job to run")
        launch.send_signal(signal.SIGINT)
        _, err = launch.communicate(timeout=60)
    finally:
        if launch.poll() is None:
            launch.kill()
            launch.wait()
    assert launch.returncode == 130, err
    world.notes.append("exit 130")
    return world.store.job(job.id)


def when_state(state: JobState, action: Callable[[World], None]) -> Callable[[World], None]:
    """An injector that acts the moment the driver has recorded `state` (in its thread): with
    `kill_9`, the driver dies between that state's record and its first step."""

    def inject(world: World) -> None:
        def hook(entered: JobState) -> None:
            if entered is state:
                world.watcher.on_state.remove(hook)
                action(world)

        world.watcher.on_state.append(hook)

    return inject


def died_then(recovery: str) -> Callable[[World, Scenario], JobRecord]:
    """The driver dies (`kill_9`, at the scenario's chosen moment); then the user's way back:
    `attach` adopts the job and finishes it; `down` ends it; `gc` must not touch what a job
    whose driver is lost still has (it lists it, saying to run `down`), and `down` ends it."""

    def drive(world: World, scenario: Scenario) -> JobRecord:
        spec = world.spec(scenario.workload, dataset=scenario.dataset, extra=scenario.spec_extra)
        with pytest.raises(DriverKilled):
            world.launch(spec)
        assert world.controller is not None
        if world.nodes is not None:
            world.nodes.close_all()  # the dead driver's connections go with it
        [job] = world.store.jobs()
        assert not job.state.is_terminal, f"the driver died with the job {job.state.value}"
        world.notes.append(f"died in {job.state.value}, {recovery}")
        if recovery == "attach":
            return world.controller.attach(job.id, CancelToken(), world.watcher)
        if recovery == "gc":
            report = world.controller.gc_report()
            doomed = world.controller.gc_doomed(report, include_unknown=True)
            assert not [item for item in doomed if item.resource.job_id == job.id], (
                "gc would delete what a job whose driver is lost still has"
            )
            listed = [item for item in report.driver_lost if item.resource.job_id == job.id]
            world.notes.append(f"gc left {len(listed)} alone")
        record, _ = world.controller.down(job.id)
        return record

    return drive


def killed_in_each_state(provider: str, recoveries: tuple[str, ...]) -> list[Scenario]:
    """kill -9 of the driver right after it recorded each lifecycle state, then each way back.
    Before the workload ran, `down` cancels it (nothing to lose); once it ran, every line and
    the last checkpoint come home, whichever way back."""
    rows = []
    states = [
        JobState.PROVISIONING,
        JobState.SETTING_UP,
        JobState.SYNCING,
        JobState.RUNNING,  # recorded before the workload is started
        JobState.COLLECTING,
        JobState.TEARING_DOWN,
    ]
    for state in states:
        ran = state in (JobState.COLLECTING, JobState.TEARING_DOWN)
        for recovery in recoveries:
            ends = SUCCEEDED if recovery == "attach" or ran else CANCELLED
            rows.append(
                Scenario(
                    f"{provider}-died-in-{state.value.lower()}-{recovery}",
                    f"{provider}: driver killed in {state.value}, then {recovery}",
                    provider,
                    together(with_dataset, when_state(state, kill_9)),
                    expect=ends,
                    lost="complete" if ends is SUCCEEDED else "none",
                    workload=Workload(show_data=True),
                    dataset=True,
                    drive=died_then(recovery),
                )
            )
    return rows


def host_without_sftp(world: World) -> None:
    """The ssh provider's host is an sshd with no SFTP subsystem (a hardened lab machine)."""
    from gpujobs.testing.ssh import LoopbackSshd

    assert world.stack is not None
    server = LoopbackSshd(world.tmp_path / "sshd-no-sftp", sftp=False)  # no space: sshd_config
    world.ssh_host = world.stack.enter_context(server)
    world.notes.append("no SFTP")


def stopped_by_gpujobs(world: World, record: JobRecord) -> None:
    """On a cloud the harness ends what runs on a node the cloud deleted, as the VM's end
    would: checked first, so that the job's processes are known to have been stopped by
    gpujobs' teardown, not by the harness."""
    from tests.fault_matrix_support import wait_gone

    alive = wait_gone(record.id)
    assert not alive, f"{len(alive)} process(es) of the job outlived its teardown"
    world.notes.append("gpujobs stopped the child")


def node_disk_of(megabytes: int) -> Callable[[World], None]:
    """The ssh host's gpujobs folder is on a disk of `megabytes` (a real tmpfs)."""

    def inject(world: World) -> None:
        from tests.test_home_disk_full import small_disk

        assert world.stack is not None
        world.stack.enter_context(small_disk(world.ssh_root, megabytes))
        world.notes.append(f"a {megabytes} MB disk")

    return inject


def log_says(words: str) -> Callable[[World, JobRecord], None]:
    def check(world: World, record: JobRecord) -> None:
        log = (Path(record.runs_dir) / "job.log").read_text(errors="replace")
        assert words in log, f"job.log does not say {words!r}"

    return check


def runs_disk_of(megabytes: int) -> Callable[[World], None]:
    """This machine's runs folder (where checkpoints come home) is on a disk of `megabytes`."""

    def inject(world: World) -> None:
        from tests.test_home_disk_full import small_disk

        assert world.stack is not None
        world.stack.enter_context(small_disk(world.runs, megabytes))
        world.notes.append(f"a {megabytes} MB disk here")

    return inject


def never_restarted(world: World, record: JobRecord) -> None:
    """A local error is not a lost node: the healthy node was not replaced."""
    assert record.restarts == 0, f"{record.restarts} restart(s): taken for a lost node"
    world.notes.append("no restart")


def odd_file_reported(name: str) -> Callable[[World, JobRecord], None]:
    def check(world: World, record: JobRecord) -> None:
        said = world.watcher.notes + [event.message for event in world.store.events(record.id)]
        assert any(name in line for line in said), f"{name} was never reported: {said[-5:]}"
        assert not (Path(record.runs_dir) / name).exists(), f"{name} came home"
        world.notes.append(f"{name} skipped, reported")

    return check


def cli_refuses(world: World, scenario: Scenario) -> None:
    """The real CLI: `gpujobs launch spec.yaml` must refuse it in one line naming the fix,
    exit code 2, no traceback, before anything starts; and never echo an env value."""
    world.spec_text_only(scenario.workload, extra=scenario.spec_extra)
    done = gpujobs_cli("launch", "spec.yaml", cwd=world.tmp_path)
    assert done.returncode == 2, (done.returncode, done.stderr[-500:])
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr[-500:]
    for word in scenario.refused:
        assert word in lines[0], f"the refusal does not say {word!r}: {lines[0][:200]}"
    assert "x" * 64 not in done.stderr, "the env value was echoed"
    world.notes.append(lines[0][:60] + ("…" if len(lines[0]) > 60 else ""))
    return None


LONG = Workload(lines=24, pause_s=0.05)
RESUMING = Workload(lines=16, pause_s=0.1, resumes=True)


# -- a node taken back mid-run ---------------------------------------------------------------------
def take_back(world: World) -> None:
    """The cloud takes the running node back, as its spot market (or a shutdown) does: its
    state says so, and the machine is gone with its processes and disk."""
    [job] = world.store.jobs()
    [row] = [r for r in world.store.nodes(job.id) if r.terminated_at is None]
    node = Node.model_validate_json(row.node_json)
    if world.aws is not None:
        reclaim_spot_instance(node.region, node.node_id)
    elif world.gcp is not None:
        zone, name = node.node_id.split("/", 1)
        world.gcp.preempt(zone, name)
    else:
        world.ps.power_off(node.node_id)
    assert world.nodes is not None
    world.nodes.wipe(node)
    world.notes.append("taken back")


def restarted_from_a_checkpoint(world: World, record: JobRecord) -> None:
    assert record.restarts == 1, f"{record.restarts} restarts"
    states = [event.state for event in world.store.events(record.id)]
    assert JobState.RECOVERING in states, "never RECOVERING"
    log = world.home.log_file(record.id).read_text()
    resumed = [int(line.split()[-1]) for line in log.splitlines() if line.startswith("resumed at")]
    assert len(resumed) == 2 and resumed[1] > 0, f"resumed at {resumed}: not from a checkpoint"
    world.notes.append(f"restarted at line {resumed[1]}")
    ledger = world.store.ledger(record.id)
    assert len(ledger) == 2 and all(e.ended_at for e in ledger), "the ledger bills both nodes"


def checkpoint_home(world: World, record: JobRecord) -> None:
    assert any(Path(record.runs_dir).glob("ckpt-*.txt")), "no checkpoint home"


UNTIL_STOPPED = Workload(lines=600, pause_s=0.05)  # 30 s: it ends by a cancel


# -- the matrix ------------------------------------------------------------------------------------
def cloud_rows(provider: str) -> list[Scenario]:
    """The rows every cloud has, built from its own fault vocabulary."""
    if provider == "aws":
        from gpujobs.testing.aws import AUTH_FAILURE, VCPU_LIMIT

        first, second = "aws/us-east-1/g4dn.xlarge", "aws/us-west-2/g4dn.xlarge"
        return [
            Scenario(
                "aws-throttled",
                "aws: RunInstances/DescribeInstances throttled",
                "aws",
                aws_throttle,
                after=expect_calls("RunInstances", 3),
            ),
            Scenario(
                "aws-hang-once",
                "aws: RunInstances hangs once (read timeout)",
                "aws",
                aws_fail("RunInstances", ("", ""), hang=True, times=1),
                after=expect_calls("RunInstances", 2),
            ),
            Scenario(
                "aws-hang-always",
                "aws: CreateSecurityGroup always hangs",
                "aws",
                aws_fail("CreateSecurityGroup", ("", ""), hang=True, times=-1),
                FAILED,
                ("did not answer", "security group"),
                lost="none",
                after=expect_calls("DeleteKeyPair", 1, at_least=True),
            ),
            Scenario(
                "aws-no-capacity-first",
                "aws: no capacity in us-east-1, fails over",
                "aws",
                aws_no_capacity("us-east-1"),
                placement=second,
                after=events_say("InsufficientInstanceCapacity", "trying the next placement"),
            ),
            Scenario(
                "aws-no-capacity-anywhere",
                "aws: no capacity in any region",
                "aws",
                aws_no_capacity(None),
                FAILED,
                ("every placement failed", first, second, "InsufficientInstance"),
                lost="none",
            ),
            Scenario(
                "aws-no-quota",
                "aws: VcpuLimitExceeded in us-east-1, fails over",
                "aws",
                aws_fail("RunInstances", VCPU_LIMIT, times=-1, region="us-east-1"),
                placement=second,
                after=events_say("VcpuLimitExceeded", "servicequotas"),
            ),
            Scenario(
                "aws-no-quota-at-plan",
                "aws: quota 0 in us-east-1, skipped at plan",
                "aws",
                aws_quota_zero_in_first_region,
                placement=second,
                after=expect_calls("RunInstances", 0, region="us-east-1"),
            ),
            Scenario(
                "aws-bad-credentials",
                "aws: credentials refused (AuthFailure)",
                "aws",
                aws_fail("ImportKeyPair", AUTH_FAILURE, times=-1),
                FAILED,
                ("AuthFailure", "aws configure"),
                lost="none",
                after=both(expect_calls("ImportKeyPair", 1), expect_calls("RunInstances", 0)),
            ),
            Scenario(
                "aws-provision-error",
                "aws: RunInstances refused (InvalidParameterCombination)",
                "aws",
                aws_fail(
                    "RunInstances",
                    ("InvalidParameterCombination", "injected: bad parameters"),
                    times=-1,
                ),
                FAILED,
                ("InvalidParameterCombination", "injected: bad parameters"),
                lost="none",
                after=expect_calls("RunInstances", 1),
            ),
            Scenario(
                "aws-wait-ready-error",
                "aws: DescribeInstances refused while waiting",
                "aws",
                arm_at(
                    "wait_ready",
                    lambda world: world.aws.fail(
                        "DescribeInstances", ("InvalidParameterValue", "injected: describe")
                    ),
                ),
                FAILED,
                ("InvalidParameterValue", "injected: describe"),
                lost="none",
                after=expect_calls("TerminateInstances", 1, at_least=True),
            ),
            Scenario(
                "aws-terminate-fails-once",
                "aws: TerminateInstances fails once, retried",
                "aws",
                aws_fail("TerminateInstances", ("IncorrectInstanceState", "injected"), times=1),
                after=expect_calls("TerminateInstances", 2),
            ),
            Scenario(
                "aws-terminate-keeps-failing",
                "aws: TerminateInstances keeps failing",
                "aws",
                aws_fail("TerminateInstances", ("IncorrectInstanceState", "injected"), times=-1),
                FAILED,
                ("teardown incomplete", "IncorrectInstanceState"),
                after=down_cleans_up,
            ),
            Scenario(
                "aws-terminate-raises-a-bug",
                "aws: terminate raises a non-gpujobs exception",
                "aws",
                lambda world: setattr(world, "wrap_provider", TerminateBug),
                FAILED,
                ("gpujobs down",),
                after=down_cleans_up,
            ),
        ]
    if provider == "gcp":
        a, b = "us-central1-a", "europe-west4-b"
        first, second = f"gcp/{a}/n1-standard-4", f"gcp/{b}/n1-standard-4"
        return [
            Scenario(
                "gcp-throttled",
                "gcp: instances.insert 429, operations 503",
                "gcp",
                gcp_throttle,
                after=expect_calls("instances.insert", 3),
            ),
            Scenario(
                "gcp-hang-once",
                "gcp: instances.insert hangs once (read timeout)",
                "gcp",
                lambda world: world.gcp.hang("instances.insert", times=1),
                after=expect_calls("instances.insert", 2),
            ),
            Scenario(
                "gcp-hang-always",
                "gcp: instances.insert always hangs",
                "gcp",
                lambda world: world.gcp.hang("instances.insert", times=None),
                FAILED,
                ("no answer in time",),
                lost="none",
                after=expect_calls("firewalls.delete", 1, at_least=True),
            ),
            Scenario(
                "gcp-no-capacity-first",
                f"gcp: no capacity in {a}, fails over",
                "gcp",
                gcp_no_capacity(a),
                placement=second,
                after=events_say("ZONE_RESOURCE_POOL_EXHAUSTED", "trying the next placement"),
            ),
            Scenario(
                "gcp-no-capacity-anywhere",
                "gcp: no capacity in any zone",
                "gcp",
                gcp_no_capacity(a, b),
                FAILED,
                ("every placement failed (2 tried)", first, second, "ZONE_RESOURCE_POOL"),
                lost="none",
            ),
            Scenario(
                "gcp-no-quota",
                "gcp: QUOTA_EXCEEDED NVIDIA_T4_GPUS, fails over",
                "gcp",
                lambda world: world.gcp.exceed_quota("NVIDIA_T4_GPUS", "us-central1", zone=a),
                placement=second,
                after=events_say("NVIDIA_T4_GPUS", "iam-admin/quotas"),
            ),
            Scenario(
                "gcp-bad-credentials",
                "gcp: credentials revoked (401, refresh fails)",
                "gcp",
                lambda world: world.gcp.revoke_credentials(),
                FAILED,
                ("gcloud auth application-default login",),
                lost="none",
                after=expect_calls("instances.insert", 0),
            ),
            Scenario(
                "gcp-provision-error",
                "gcp: instances.insert refused (400)",
                "gcp",
                gcp_http_error("instances.insert", "injected: Invalid value for machineType"),
                FAILED,
                ("injected: Invalid value for machineType",),
                lost="none",
                after=expect_calls("firewalls.delete", 1, at_least=True),
            ),
            Scenario(
                "gcp-wait-ready-error",
                "gcp: instances.get refused while waiting",
                "gcp",
                arm_at(
                    "wait_ready",
                    lambda world: gcp_http_error("instances.get", "injected: get refused")(world),
                ),
                FAILED,
                ("injected: get refused",),
                lost="none",
                after=expect_calls("instances.delete", 1, at_least=True),
            ),
            Scenario(
                "gcp-terminate-fails-once",
                "gcp: instances.delete denied once, retried",
                "gcp",
                gcp_deny_deletes(times=1),
                after=expect_calls("instances.delete", 2),
            ),
            Scenario(
                "gcp-terminate-keeps-failing",
                "gcp: instances.delete denied (403)",
                "gcp",
                gcp_deny_deletes(times=None),
                FAILED,
                ("teardown incomplete", "compute.instances.delete"),
                after=down_cleans_up,
            ),
        ]
    first, second = "paperspace/ny2/A4000", "paperspace/ams1/A4000"
    return [
        Scenario(
            "paperspace-throttled",
            "paperspace: POST /machines 429 (Retry-After)",
            "paperspace",
            ps_fail("POST /machines", status=429, headers={"Retry-After": "7"}, times=2),
            after=expect_calls("POST /machines", 3),
        ),
        Scenario(
            "paperspace-hang-once",
            "paperspace: POST /machines hangs once",
            "paperspace",
            ps_fail("POST /machines", error=httpx.ReadTimeout, times=1),
            after=expect_calls("POST /machines", 2),
        ),
        Scenario(
            "paperspace-hang-always",
            "paperspace: POST /machines always hangs",
            "paperspace",
            ps_fail("POST /machines", error=httpx.ReadTimeout, times=10**6),
            FAILED,
            ("did not confirm", "ReadTimeout"),
            lost="none",
        ),
        Scenario(
            "paperspace-no-capacity-first",
            "paperspace: A4000 unavailable in ny2, fails over",
            "paperspace",
            ps_unavailable("ny2"),
            placement=second,
            after=events_say("not available in ny2", "trying the next placement"),
        ),
        Scenario(
            "paperspace-no-capacity-anywhere",
            "paperspace: A4000 unavailable everywhere",
            "paperspace",
            ps_unavailable("ny2", "ams1"),
            FAILED,
            ("every placement failed (2 tried)", first, second, "not available"),
            lost="none",
        ),
        Scenario(
            "paperspace-no-quota",
            "paperspace (no quota API): 'machine limit' 400, fails over",
            "paperspace",
            ps_fail(
                "POST /machines", status=400, message="You have reached your team's machine limit"
            ),
            placement=second,
            after=events_say("machine limit is reached", "trying the next placement"),
        ),
        Scenario(
            "paperspace-bad-credentials",
            "paperspace: API key refused (401)",
            "paperspace",
            ps_rotate_key,
            FAILED,
            ("PAPERSPACE_API_KEY", "401"),
            lost="none",
            after=expect_calls("POST /machines", 0),
        ),
        Scenario(
            "paperspace-provision-error",
            "paperspace: POST /machines refused (billing)",
            "paperspace",
            ps_fail("POST /machines", status=400, message="Billing: a valid payment method"),
            FAILED,
            ("valid payment method",),
            lost="none",
        ),
        Scenario(
            "paperspace-wait-ready-error",
            "paperspace: GET /machines/{id} refused while waiting",
            "paperspace",
            arm_at(
                "wait_ready",
                lambda world: world.ps.fail(
                    "GET /machines/{id}", status=400, message="injected: read refused"
                ),
            ),
            FAILED,
            ("injected: read refused",),
            lost="none",
            after=expect_calls("DELETE /machines/{id}", 1, at_least=True),
        ),
        Scenario(
            "paperspace-terminate-fails-once",
            "paperspace: DELETE /machines/{id} 500s past its retries once",
            "paperspace",
            ps_fail("DELETE /machines/{id}", status=500, times=ATTEMPTS),
            after=expect_calls("DELETE /machines/{id}", ATTEMPTS + 1),
        ),
        Scenario(
            "paperspace-terminate-keeps-failing",
            "paperspace: DELETE /machines/{id} keeps failing (500)",
            "paperspace",
            ps_fail("DELETE /machines/{id}", status=500, times=10**6),
            FAILED,
            ("teardown incomplete", "did not answer deleting machine"),
            after=down_cleans_up,
        ),
    ]


def step_rows() -> list[Scenario]:
    """A transport failure (past SSH's own reconnects) at each step, on AWS."""
    steps = [
        ("setup", JobState.SETTING_UP, "run", "none", False),
        ("sync", JobState.SYNCING, "put", "none", True),
        ("start", JobState.RUNNING, "start", "none", False),
        ("watch", JobState.RUNNING, "read", "prefix", False),
        # The quiet second collect after the error brings everything home.
        ("collect", JobState.COLLECTING, "list_files", "complete", False),
    ]
    return [
        Scenario(
            f"aws-transport-{step}",
            f"aws: transport fails at {step} ({method})",
            "aws",
            together(aws_step_fault(state, method), with_dataset)
            if dataset
            else aws_step_fault(state, method),
            FAILED,
            (f"injected: {method} failed for good",),
            lost=lost,
            dataset=dataset,
            after=fired,
        )
        for step, state, method, lost, dataset in steps
    ]


SCENARIOS: list[Scenario] = [
    *cloud_rows("aws"),
    *cloud_rows("gcp"),
    *cloud_rows("paperspace"),
    *step_rows(),
    Scenario(
        "aws-ssh-cut-during-sync",
        "aws: SSH cut twice during the dataset sync",
        "aws",
        with_dataset,
        dataset=True,
        workload=Workload(lines=4, show_data=True),
        during=cutting(JobState.SYNCING, times=2, every_s=0.5, rate=1.5e6),
        after=both(cuts_landed(1), events_say("dataset: 6 files, 2400000 bytes")),
    ),
    Scenario(
        "aws-ssh-cut-during-log",
        "aws: SSH cut 3x while the log streams",
        "aws",
        workload=LONG,
        during=cutting(JobState.RUNNING, times=3, every_s=0.3),
        after=cuts_landed(2),
    ),
    Scenario(
        "aws-ssh-cut-during-pull",
        "aws: SSH cut twice during the checkpoint pull",
        "aws",
        workload=Workload(lines=6, ckpt_bytes=200_000),
        during=cutting(JobState.COLLECTING, times=2, every_s=0.3, rate=1.0e6),
        after=cuts_landed(1),
    ),
    Scenario(
        "local-max-hours-no-process-left",
        "local: a job with budget.max_hours leaves no process",
        "local",
        spec_extra="budget: {max_hours: 1}\n",
    ),
    Scenario(
        "local-leaves-a-child",
        "local: the workload leaves a background child running",
        "local",
        workload=Workload(leaves_child=True),
    ),
    Scenario(
        "local-kill-9-attach",
        "local (real CLI): kill -9 of the detached driver, attach",
        "local",
        workload=LONG,
        drive=cli_kill9_then_attach,
    ),
    *[
        Scenario(
            f"{cloud}-driver-dies-attach",
            f"{cloud}: driver dies mid-run (kill -9, in process), attach",
            cloud,
            when_logged(3, kill_9),
            workload=LONG,
            drive=attach_after_the_driver_died,
        )
        for cloud in ("aws", "gcp", "paperspace")
    ],
    *killed_in_each_state("local", ("attach", "down", "gc")),
    Scenario(
        "ssh-plain",
        "ssh: a dataset synced, the run, checkpoints home",
        "ssh",
        with_dataset,
        workload=Workload(show_data=True),
        dataset=True,
    ),
    Scenario(
        "ssh-no-sftp",
        "ssh: a host without SFTP (files over exec)",
        "ssh",
        together(with_dataset, host_without_sftp),
        workload=Workload(show_data=True),
        dataset=True,
    ),
    Scenario(
        "ssh-leaves-a-child",
        "ssh: the workload leaves a background child running",
        "ssh",
        workload=Workload(leaves_child=True),
    ),
    Scenario(
        "ssh-driver-dies-attach",
        "ssh: driver dies mid-run (kill -9, in process), attach",
        "ssh",
        when_logged(3, kill_9),
        workload=LONG,
        drive=died_then("attach"),
    ),
    *killed_in_each_state("ssh", ("attach", "down")),
    Scenario(
        "ssh-home-disk-too-small",
        "ssh: this machine's disk cannot hold the checkpoints",
        "ssh",
        runs_disk_of(4),
        expect=FAILED,
        cause=("not enough room for the checkpoints", "they need"),
        lost="prefix",
        workload=Workload(lines=3, ckpt_bytes=3_000_000),
        after=never_restarted,
    ),
    Scenario(
        "ssh-node-disk-full",
        "ssh: the host's disk fills with checkpoints mid-run",
        "ssh",
        node_disk_of(3),
        expect=FAILED,
        cause=("disk is full", "free space there"),
        lost="prefix",
        workload=Workload(lines=6, ckpt_bytes=1_000_000),
        after=both(checkpoint_home, log_says("No space left on device")),
    ),
    *[
        Scenario(
            f"{provider}-env-value-too-long",
            f"{provider}: an env value of 200 KiB (past Linux's 128 KiB)",
            provider,
            spec_extra=f"env: {{BIG_SECRET: {'x' * 200 * 1024}}}\n",
            drive=cli_refuses,
            refused=("BIG_SECRET", "env"),
        )
        for provider in ("local", "ssh", "aws")
    ],
    *[
        Scenario(
            f"{cloud}-leaves-a-child",
            f"{cloud}: the workload leaves a background child running",
            cloud,
            workload=Workload(leaves_child=True),
            after=stopped_by_gpujobs,
        )
        for cloud in ("aws", "gcp", "paperspace")
    ],
    *[
        Scenario(
            f"{provider}-fifo-among-checkpoints",
            f"{provider}: a FIFO among the checkpoints",
            provider,
            workload=Workload(hostile=True),
            after=odd_file_reported("a-fifo"),
        )
        for provider in ("local", "ssh", "aws")
    ],
    Scenario(
        "local-sigint",
        "local (real CLI): SIGINT during the run",
        "local",
        expect=CANCELLED,
        cause=("SIGINT",),
        lost="cancelled",
        workload=UNTIL_STOPPED,
        drive=cli_sigint,
    ),
    Scenario(
        "aws-ctrl-c",
        "aws: Ctrl-C during the run (the SIGINT handler's cancel)",
        "aws",
        when_logged(3, ctrl_c),
        expect=CANCELLED,
        cause=("SIGINT",),
        lost="cancelled",
        workload=UNTIL_STOPPED,
    ),
    *[
        Scenario(
            f"{cloud}-node-taken-back",
            f"{cloud}: {what} mid-run, restarted elsewhere",
            cloud,
            when_logged(8, take_back),
            lost="resumed",
            workload=RESUMING,
            spec_extra=f"{'spot: true' if spot else ''}\ncheckpoints: {{every_minutes: 0.005}}\n",
            after=restarted_from_a_checkpoint,
        )
        for cloud, what, spot in (
            ("aws", "spot instance reclaimed (Server.SpotInstanceTermination)", True),
            ("gcp", "spot VM preempted (deleted)", True),
            ("paperspace", "machine turned off", False),
        )
    ],
    Scenario(
        "aws-taken-back-no-restarts",
        "aws: spot instance reclaimed, recovery.max_restarts: 0",
        "aws",
        when_logged(8, take_back),
        expect=FAILED,
        cause=("Server.SpotInstanceTermination", "recovery.max_restarts is 0"),
        lost="prefix",
        workload=RESUMING,
        spec_extra="spot: true\ncheckpoints: {every_minutes: 0.005}\nrecovery: {max_restarts: 0}\n",
        after=checkpoint_home,
    ),
]


def _param(scenario: Scenario) -> Any:
    marks = [pytest.mark.xfail(strict=True, reason=scenario.bug)] if scenario.bug else []
    return pytest.param(scenario, id=scenario.id, marks=marks)


# -- the one test ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scenario", [_param(s) for s in SCENARIOS])
def test_fault_matrix(scenario: Scenario, sshd, home, store, tmp_path) -> None:
    problems: list[str] = []
    with contextlib.ExitStack() as stack:
        world = make_world(
            scenario.provider, sshd=sshd, home=home, store=store, tmp_path=tmp_path, stack=stack
        )
        scenario.inject(world)
        if world.cloud is not None:
            world.build()
        try:
            record = scenario.drive(world, scenario)
        except Exception as exc:  # the job's record still tells how it ended
            if not scenario.may_raise:
                problems.append(f"raised {exc.__class__.__name__}: {exc}")
            [record] = store.jobs()
        if record is None:  # refused before a job existed
            leaked = world.cloud_leftovers() + [
                f"job key {path.name}" for path in world.home.keys.glob("*")
            ]
            leaked += [f"job {job.id} recorded" for job in store.jobs()]
            outcome = "; ".join(["refused", *world.notes])
            ROWS.append((scenario.name, outcome, ", ".join(leaked) or "none", "n/a (never ran)"))
            assert not leaked, f"left behind: {leaked}"
            return
        record = store.job(record.id)
        if record.state is not scenario.expect:
            problems.append(f"ended {record.state.value}, expected {scenario.expect.value}")
        for word in scenario.cause:
            if word not in (record.error or ""):
                problems.append(f"the error does not say {word!r}: {record.error}")
        if scenario.placement and record.placement != scenario.placement:
            problems.append(f"placed on {record.placement}, expected {scenario.placement}")
        if scenario.after is not None:
            try:
                scenario.after(world, record)
            except AssertionError as exc:
                problems.append(str(exc).splitlines()[0])
        world.clear_faults()
        leaked = world.leftovers(record.id)
        data = world.dataset_md5 if scenario.workload.show_data else ""
        lost = lost_items(scenario.lost, home, record, scenario.workload, data)
        outcome = record.state.value
        if record.state is not scenario.expect:
            outcome += f" (expected {scenario.expect.value})"
        elif record.state is FAILED and record.error:
            outcome += f": {_gist(record.error)}"
        outcome = "; ".join([outcome, *world.notes])
        if scenario.bug:
            outcome += " [known bug]"
        lost_text = ", ".join(lost) or ("n/a (never ran)" if scenario.lost == "none" else "nothing")
        ROWS.append((scenario.name, outcome, ", ".join(leaked) or "none", lost_text))
    assert not problems, problems
    assert not leaked, f"left behind: {leaked}"
    assert not lost, f"lost: {lost}"


COMPLETE_LOG = "line 0\nline 1\nline 2\ndone\n"


@pytest.mark.parametrize(
    ("log", "checkpoint", "found"),
    [
        (COMPLETE_LOG, "2\n", None),
        ("line 0\nline 1\nline 1\nline 2\ndone\n", "2\n", "twice"),
        ("line 0\nline 2\ndone\n", "2\n", "out of order or skipped"),
        ("line 0\nline 1\ndone\n", "1\n", "missing"),
        (COMPLETE_LOG, None, "not home"),
    ],
)
def test_the_lost_check_sees_what_a_scenario_could_lose(
    home, store, tmp_path, log, checkpoint, found
):
    """The matrix's `lost` column is only as good as this check."""
    runs = tmp_path / "runs" / "job-1"
    runs.mkdir(parents=True)
    record = store.create_job(
        job_id="job-1", name="j", spec_json="{}", spec_path="s", runs_dir=str(runs), driver_pid=1
    )
    home.log_file(record.id).write_text(log)
    (runs / "job.log").write_text(log)
    if checkpoint is not None:
        (runs / "ckpt-0002.txt").write_text(checkpoint)
    lost = lost_items("complete", home, record, Workload(lines=3))
    if found is None:
        assert lost == []
    else:
        assert any(found in item for item in lost), lost


def _gist(error: str, width: int = 44) -> str:
    """The start of an error's first clause, for the table."""
    first = error.split("; ")[0].split(" (")[0]
    return first if len(first) <= width else first[: width - 1] + "…"


# -- the table -------------------------------------------------------------------------------------
class _MatrixTable:
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if not ROWS:
            return
        terminalreporter.write_sep("=", f"fault matrix: {len(ROWS)} scenarios")
        for line in format_table(ROWS):
            terminalreporter.write_line(line)


@pytest.fixture(scope="module", autouse=True)
def _print_the_table(request: pytest.FixtureRequest) -> Any:
    plugins = request.config.pluginmanager
    if not plugins.has_plugin("fault-matrix-table"):
        plugins.register(_MatrixTable(), "fault-matrix-table")
    yield
