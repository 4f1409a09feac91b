"""`gpujobs launch SPEC --resume-from JOB`: a new job that starts from another job's checkpoints
at home, with the new spec's args. Real mnist training on the local provider."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import torch

from tests.conftest import gpujobs_cli, write_spec

MNIST = """
name: {name}
workload: mnist_cnn
args: {{synthetic: 600, epochs: {epochs}, batch_size: 32, seed: 1}}
checkpoints: {{every_minutes: 0.02, keep: 5}}
"""


def job(ref: str) -> dict:
    return json.loads(gpujobs_cli("status", "--json", ref).stdout)


def test_a_cancelled_job_continues_to_more_epochs(tmp_path: Path) -> None:
    first_spec = write_spec(tmp_path, MNIST.format(name="digits", epochs=50), "first.yaml")
    first_id = gpujobs_cli("launch", "--detach", str(first_spec)).stdout.strip()
    runs = tmp_path / "runs" / first_id
    deadline = time.monotonic() + 240
    while not list(runs.glob("ckpt-*.pt")):  # a checkpoint came home: the job is under way
        assert time.monotonic() < deadline, gpujobs_cli("logs", first_id).stdout[-2000:]
        time.sleep(0.5)
    down = gpujobs_cli("down", first_id, timeout=200)
    assert down.returncode == 0, down.stderr
    first = job(first_id)
    assert first["state"] == "CANCELLED"
    newest = max(runs.glob("ckpt-*.pt"))
    saved = torch.load(newest, map_location="cpu", weights_only=False)
    more = saved["epoch"] + 2
    second_spec = write_spec(tmp_path, MNIST.format(name="digits", epochs=more), "second.yaml")
    done = gpujobs_cli("launch", str(second_spec), "--resume-from", first_id, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"epoch {more}/{more}" in done.stdout
    # The node's copy of the first job's newest checkpoint, at the step it was saved.
    resumed = rf"resume: \S*/{newest.name} \(epoch \d+, batch \d+, step {saved['step']}\)"
    assert re.search(resumed, done.stdout), "it continued, it did not start again"
    second = json.loads(gpujobs_cli("status", "--json").stdout)[0]
    assert second["id"] != first_id and second["state"] == "SUCCEEDED"
    final = sorted(Path(second["runs_dir"]).glob("ckpt-*.pt"))[-1]
    assert torch.load(final, map_location="cpu", weights_only=False)["epoch"] == more
    notes = [event["message"] for event in job(second["id"])["events"]]
    assert any(f"resumes from {first_id}" in note for note in notes)
    assert sorted(runs.glob("ckpt-*.pt")), "the first job's checkpoints are still its own"


def test_resume_from_refuses_a_job_without_checkpoints_and_an_unknown_one(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: plain\ncommand: 'true'\n")
    assert gpujobs_cli("launch", str(spec)).returncode == 0
    plain = json.loads(gpujobs_cli("status", "--json").stdout)[0]["id"]
    done = gpujobs_cli("launch", str(spec), "--resume-from", plain)
    assert done.returncode == 2 and "no checkpoint came home" in done.stderr
    done = gpujobs_cli("launch", str(spec), "--resume-from", "nosuchjob")
    assert done.returncode == 2 and "nosuchjob" in done.stderr
    assert len(json.loads(gpujobs_cli("status", "--json").stdout)) == 1, "nothing recorded"
