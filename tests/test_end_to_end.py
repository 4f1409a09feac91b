"""The bundled mnist workload, really trained, through the whole lifecycle on the local provider."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.conftest import gpujobs_cli, write_spec


def test_mnist_trains_end_to_end_and_its_checkpoints_come_home(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        """
        name: mnist-tiny
        workload: mnist_cnn
        args: {synthetic: 600, epochs: 2, batch_size: 32, seed: 1}
        checkpoints: {every_minutes: 1, keep: 2}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "epoch 2/2" in done.stdout, "the training log is streamed to stdout"
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    runs = Path(job["runs_dir"])
    checkpoints = sorted(runs.glob("ckpt-*.pt"))
    assert 1 <= len(checkpoints) <= 2, "the node kept `keep` checkpoints and they came home"
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
    assert state["epoch"] in (1, 2)
    metrics = [json.loads(line) for line in (runs / "metrics.jsonl").read_text().splitlines()]
    assert metrics, "metrics came home"
    assert "epoch 2/2" in (runs / "job.log").read_text()
    assert not (tmp_path / "home" / "work" / job["id"]).exists()
