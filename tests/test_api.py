"""The public Python API (gpujobs.api, re-exported as gpujobs.launch & co.), as a notebook uses
it: a real local job launched, waited on, its log read and its status listed; and the same
refusals the CLI gives, as exceptions, with nothing recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

import gpujobs
from gpujobs.errors import NoPlacementError, SpecError
from gpujobs.state import JobState
from tests.conftest import write_spec

TINY_MNIST = """
name: api-mnist
workload: mnist_cnn
args: {synthetic: 400, epochs: 1, batch_size: 32, seed: 1}
checkpoints: {every_minutes: 1, keep: 1}
"""


@pytest.mark.slow
def test_a_detached_local_job_through_the_api(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, TINY_MNIST)
    job = gpujobs.launch(spec, detach=True, runs_dir=tmp_path / "runs")
    assert isinstance(job, gpujobs.Job) and job.id.startswith("api-mnist-")
    final = job.wait(timeout=240, poll_s=0.2)
    assert final.state is JobState.SUCCEEDED, (final.error, job.logs()[-2000:])
    assert final.succeeded and final.done and not final.driver_lost
    assert "epoch 1/1" in job.logs()
    assert sorted(final.runs_dir.glob("ckpt-*.pt")), "the checkpoint came home"
    assert final.runs_dir == tmp_path / "runs" / job.id
    [listed] = gpujobs.status()
    assert listed.id == job.id and listed.state is JobState.SUCCEEDED
    assert gpujobs.job("api-mnist").id == job.id, "a handle by name"


def test_a_mapping_spec_runs_in_this_process_and_returns_when_done(tmp_path: Path) -> None:
    seen: list[str] = []

    class Events:
        def state(self, job_id: str, state: JobState, message: str) -> None:
            seen.append(state.value)

        def log(self, data: bytes) -> None:
            seen.append("log")

        def note(self, message: str) -> None: ...

        def progress(self, label: str, done: int, total: int) -> None: ...

    job = gpujobs.launch(
        {"name": "api-echo", "command": "echo hello from the node"},
        runs_dir=tmp_path / "runs",
        on_event=Events(),
    )
    assert job.state is JobState.SUCCEEDED
    assert "hello from the node" in job.logs()
    assert seen[0] == "PLANNING" and seen[-1] == "SUCCEEDED" and "log" in seen
    assert job.status().runs_dir == tmp_path / "runs" / job.id


def test_refusals_raise_and_record_nothing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="give exactly one of"):
        gpujobs.launch({"name": "bad"})
    with pytest.raises(NoPlacementError):
        gpujobs.launch({"name": "big", "command": "true", "resources": {"gpu": "H100"}})
    spec = write_spec(tmp_path, "name: a\ncommand: 'true'\nnodes: x\n")
    with pytest.raises(SpecError, match=":3: nodes:"):
        gpujobs.plan(spec)
    assert gpujobs.status() == []


def test_plan_and_budget_answer_with_typed_values(tmp_path: Path) -> None:
    plan = gpujobs.plan({"name": "p", "command": "true"})
    assert plan.placements and plan.placements[0].offer.provider == "local"
    report = gpujobs.budget()
    assert report.limits == [] and report.total == 0.0


def test_transfer_without_weights_is_a_warning_not_a_print(
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = {"name": "t", "workload": "transfer", "args": {"arch": "resnet18", "synthetic": 30}}
    with pytest.warns(UserWarning, match="trains from scratch, not transfer learning"):
        plan = gpujobs.plan(spec)
    assert plan.placements
    assert capsys.readouterr() == ("", ""), "the API prints nothing"
