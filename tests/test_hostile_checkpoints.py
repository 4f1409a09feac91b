"""Hostile content in a checkpoint folder (issue 24, item 4): a FIFO, a socket, and a name that
is a file on one side and a folder on the other are skipped and reported; the job ends as its
workload did and its log reaches runs/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec

HOSTILE = r"""
name: hostile
command: >-
  cd "$GPUJOBS_CKPT_DIR" && mkfifo pipe && python3 -c "import socket;
  s = socket.socket(socket.AF_UNIX); s.bind('sock')" && echo kept > real.txt &&
  mkdir -p clash && echo inner > clash/inner.txt && echo flat > was-a-file.txt &&
  sleep 1.5 && rm -rf clash was-a-file.txt && echo now-a-file > clash &&
  mkdir was-a-file.txt && echo deep > was-a-file.txt/deep.txt && sleep 1.5 && echo finished
checkpoints: {every_minutes: 0.02}
"""


@pytest.mark.parametrize("provider", ["local", "ssh"])
def test_odd_files_are_skipped_and_reported(
    sshd: LoopbackSshd, tmp_path: Path, provider: str
) -> None:
    extra = ""
    if provider == "ssh":
        extra = f"""
providers: [ssh]
ssh:
  hosts: ["{sshd.target}"]
  identity_file: {sshd.client_key}
  workdir: {tmp_path / "lab"}
"""
    spec = write_spec(tmp_path, HOSTILE + extra)
    done = gpujobs_cli("launch", str(spec), timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "internal error" not in done.stderr
    assert "skipped what cannot come home" in done.stderr
    assert "pipe (a FIFO)" in done.stderr and "sock (a socket)" in done.stderr
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert job["state"] == "SUCCEEDED"
    runs = Path(job["runs_dir"])
    assert (runs / "real.txt").read_text() == "kept\n"
    assert "finished" in (runs / "job.log").read_text()
    assert not (runs / "pipe").exists() and not (runs / "sock").exists()


def test_a_name_that_changed_kind_is_skipped_not_fatal(tmp_path: Path) -> None:
    from gpujobs.remote.sync import pull_dir
    from gpujobs.remote.transport import LocalTransport

    node, home = tmp_path / "node", tmp_path / "home"
    (node / "was-a-file.txt").mkdir(parents=True)
    (node / "was-a-file.txt" / "deep.txt").write_text("deep")
    (node / "clash").write_text("now a file")
    (node / "fine.txt").write_text("fine")
    home.mkdir()
    (home / "was-a-file.txt").write_text("flat")  # pulled when it was a file
    (home / "clash").mkdir()  # pulled when it was a folder
    (home / "clash" / "inner.txt").write_text("inner")
    report = pull_dir(LocalTransport(), str(node), home)
    assert (home / "fine.txt").read_text() == "fine"
    assert sorted(name.split(" ")[0] for name in report.odd) == [
        "clash",
        "was-a-file.txt/deep.txt",
    ]
