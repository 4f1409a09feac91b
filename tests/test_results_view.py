"""`gpujobs results JOB`: the summary a workload wrote and the pictures that came home."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from gpujobs.api.controller import Controller
from gpujobs.cli.app import create_app
from gpujobs.paths import HomeLayout
from gpujobs.state import JobState, Store

SUMMARY = {
    "workload": "transfer",
    "kind": "classifier",
    "final": {"epoch": 3, "step": 30, "loss": 0.69, "accuracy": 0.417},
    "best_accuracy": {"value": 0.52, "epoch": 1, "step": 10},
    "verdict": "accuracy 41.7% is at or below chance (50.0% for 2 classes)",
}


def _job(store: Store, tmp_path: Path) -> Path:
    runs = tmp_path / "runs" / "covers"
    (runs / "out" / "nested").mkdir(parents=True)
    (runs / "out" / "summary.json").write_text(json.dumps(SUMMARY))
    (runs / "out" / "accuracy.png").write_bytes(b"\x89PNG")
    (runs / "out" / "nested" / "walk.mp4").write_bytes(b"\0")
    (runs / "out" / "metrics.jsonl").write_text("{}\n")
    store.create_job(
        job_id="covers",
        name="covers",
        spec_json="{}",
        spec_path="/s.yaml",
        runs_dir=str(runs),
        driver_pid=None,
    )
    return runs


def test_results_prints_the_verdict_and_picture_paths(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    runs = _job(store, tmp_path)
    app = create_app(lambda: Controller(home, store, lambda: {}))
    done = CliRunner().invoke(app, ["results", "covers"])
    assert done.exit_code == 0, done.output
    assert "WARNING: accuracy 41.7% is at or below chance" in done.output
    assert "best accuracy: 0.52 at epoch 1, step 10" in done.output
    assert str(runs / "out" / "accuracy.png") in done.output
    assert str(runs / "out" / "nested" / "walk.mp4") in done.output
    assert "metrics.jsonl" not in done.output

    as_json = CliRunner().invoke(app, ["results", "covers", "--json"])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.output)
    assert data["summary"] == SUMMARY and len(data["pictures"]) == 2
    assert data["summary_path"] == str(runs / "out" / "summary.json")


def test_results_lists_per_class_accuracy_lowest_first(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    runs = _job(store, tmp_path)
    per_class = {"per_class_accuracy": {"cats": 0.9, "dogs": 0.25, "birds": None}}
    (runs / "out" / "summary.json").write_text(json.dumps({**SUMMARY, **per_class}))
    app = create_app(lambda: Controller(home, store, lambda: {}))
    done = CliRunner().invoke(app, ["results", "covers"])
    assert done.exit_code == 0, done.output
    assert "per-class accuracy, lowest first: dogs 25.0%, cats 90.0%\n" in done.output


def test_results_before_training_ended_says_so(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    runs = _job(store, tmp_path)
    (runs / "out" / "summary.json").unlink()
    app = create_app(lambda: Controller(home, store, lambda: {}))
    done = CliRunner().invoke(app, ["results", "covers"])
    assert done.exit_code == 0 and "no summary.json yet" in done.output


def test_results_of_an_unknown_job_is_one_line(home: HomeLayout, store: Store) -> None:
    app = create_app(lambda: Controller(home, store, lambda: {}))
    done = CliRunner().invoke(app, ["results", "nope"])
    assert done.exit_code != 0 and "Traceback" not in done.output


def test_status_marks_a_succeeded_job_whose_training_failed(
    home: HomeLayout, store: Store, tmp_path: Path
) -> None:
    runs = _job(store, tmp_path)
    (runs / "summary.json").write_text(json.dumps(SUMMARY))  # where --out comes home
    store.transition("covers", JobState.SUCCEEDED, "done")
    app = create_app(lambda: Controller(home, store, lambda: {}))
    data = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)
    assert data[0]["state"] == "SUCCEEDED"
    assert data[0]["training_verdict"] == SUMMARY["verdict"]
    table = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["status"]).output
    assert "SUCCEEDED (training failed: gpujobs results covers)" in table

    (runs / "summary.json").write_text(json.dumps({**SUMMARY, "verdict": None}))
    data = json.loads(CliRunner().invoke(app, ["status", "--json"]).output)
    assert data[0]["training_verdict"] is None
    assert "training failed" not in CliRunner().invoke(app, ["status"]).output
