"""The ssh provider end to end: the mnist workload really trained on a machine reached over a
real loopback sshd, in a venv made without root, its dataset synced, its checkpoints home, and
nothing of the job left on the machine afterwards."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from gpujobs.testing.ssh import LoopbackSshd, free_port, make_key
from tests.conftest import gpujobs_cli, write_spec


def ssh_spec(folder: Path, host: str, key: Path, remote_root: Path, extra: str = "") -> Path:
    return write_spec(
        folder,
        f"""
        name: mnist-ssh
        workload: mnist_cnn
        args: {{synthetic: 600, epochs: 2, batch_size: 32, seed: 1}}
        providers: [ssh]
        ssh:
          hosts: ["{host}"]
          identity_file: {key}
          workdir: {remote_root}
        checkpoints: {{every_minutes: 1, keep: 2}}
        {extra}
        """,
    )


def test_mnist_trains_over_ssh_in_a_venv_and_leaves_nothing_behind(
    sshd: LoopbackSshd, tmp_path: Path
) -> None:
    dataset = tmp_path / "dataset"
    (dataset / "labels").mkdir(parents=True)
    (dataset / "labels" / "names.txt").write_text("\n".join(str(d) for d in range(10)))
    (dataset / "notes with spaces.txt").write_bytes(os.urandom(4096))
    remote_root = tmp_path / "lab-machine" / "gpujobs root"
    spec = ssh_spec(
        tmp_path, sshd.target, sshd.client_key, remote_root, "dataset: {source: ./dataset}"
    )
    done = gpujobs_cli("launch", str(spec), timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "epoch 2/2" in done.stdout, "the training log streamed over ssh"
    assert "venv runtime" in done.stderr
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert job["state"] == "SUCCEEDED"
    runs = Path(job["runs_dir"])
    checkpoints = sorted(runs.glob("ckpt-*.pt"))
    assert 1 <= len(checkpoints) <= 2
    state = torch.load(checkpoints[-1], map_location="cpu", weights_only=False)
    assert state["epoch"] in (1, 2)
    assert "epoch 2/2" in (runs / "job.log").read_text()
    # The machine keeps the venv (a cache for the next job) and nothing of the job.
    assert not (remote_root / "work" / job["id"]).exists()
    [venv] = [p for p in (remote_root / "venvs").iterdir() if p.is_dir()]
    assert (venv / ".gpujobs-ready").exists()
    home = tmp_path / "home"
    assert not (home / "keys" / job["id"]).exists(), "the job key went with the job"
    assert f"[127.0.0.1]:{sshd.port} ssh-ed25519" in (home / "known_hosts").read_text()


def test_an_unreachable_host_is_refused_before_anything_starts(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("not used: nothing answers\n")
    spec = ssh_spec(tmp_path, f"someone@127.0.0.1:{free_port()}", key, tmp_path / "r")
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "no placement fits the spec" in done.stderr and "not available" in done.stderr
    assert "Traceback" not in done.stderr
    assert json.loads(gpujobs_cli("status", "--json").stdout) == []


def test_a_changed_host_key_stops_the_launch(tmp_path: Path) -> None:
    with LoopbackSshd(tmp_path / "own-sshd") as server:
        home_pins = tmp_path / "home" / "known_hosts"
        home_pins.parent.mkdir(parents=True)
        other = Path(f"{make_key(tmp_path / 'other-host-key')}.pub").read_text().split()
        home_pins.write_text(f"[127.0.0.1]:{server.port} {other[0]} {other[1]}\n")
        spec = ssh_spec(tmp_path, server.target, server.client_key, tmp_path / "r")
        done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode == 2, done.stderr
    assert "host key of [127.0.0.1]" in done.stderr and "changed" in done.stderr
    assert "Traceback" not in done.stderr
