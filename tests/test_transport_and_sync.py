from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from gpujobs.errors import CommandFailedError, TransportError
from gpujobs.remote.logs import LogFollower, tail_lines
from gpujobs.remote.sync import pull_dir, push_dir
from gpujobs.remote.transport import LocalTransport, RemoteFile
from gpujobs.runtime.launcher import launch_script
from gpujobs.runtime.node_layout import NodeLayout


def test_run_quotes_nothing_into_a_shell_and_reports_failures(tmp_path: Path) -> None:
    transport = LocalTransport()
    hostile = "$(touch pwned); `touch pwned2`"
    assert transport.run(["echo", hostile]).stdout == hostile + "\n"
    assert not (tmp_path / "pwned").exists()
    with pytest.raises(CommandFailedError) as caught:
        transport.run(["sh", "-c", "echo why it failed >&2; exit 4"])
    assert "exited with 4" in str(caught.value) and "why it failed" in str(caught.value)


def test_read_by_offset_and_missing_files(tmp_path: Path) -> None:
    transport = LocalTransport()
    (tmp_path / "f").write_bytes(b"0123456789")
    assert transport.read(str(tmp_path / "f"), 4, 3) == b"456"
    assert transport.read(str(tmp_path / "absent"), 0) == b""


def test_put_and_get_are_atomic_and_keep_mtime(tmp_path: Path) -> None:
    transport = LocalTransport()
    source = tmp_path / "a.txt"
    source.write_text("x")
    os.utime(source, (1_000_000, 1_000_000))
    transport.put(source, str(tmp_path / "node" / "deep" / "a.txt"), mode=0o600)
    placed = tmp_path / "node" / "deep" / "a.txt"
    assert placed.read_text() == "x" and placed.stat().st_mtime == 1_000_000
    assert placed.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in placed.parent.iterdir()] == ["a.txt"], "no temp file left behind"
    with pytest.raises(TransportError, match="no such file"):
        transport.get(str(tmp_path / "absent"), tmp_path / "here")


def make_tree(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    for index in range(5):
        (root / f"f{index}.bin").write_bytes(os.urandom(100 + index))
    (root / "sub" / "g.txt").write_text("g")


def test_push_sends_only_what_changed_and_verifies(tmp_path: Path) -> None:
    transport, local, remote = LocalTransport(), tmp_path / "local", tmp_path / "remote"
    make_tree(local)
    seen: list[tuple[int, int]] = []
    first = push_dir(transport, local, str(remote), progress=lambda d, t: seen.append((d, t)))
    assert (first.files_total, first.files_sent) == (6, 6)
    assert seen[-1][0] == seen[-1][1] == first.bytes_total
    (local / "f1.bin").write_bytes(b"changed")
    again = push_dir(transport, local, str(remote))
    assert (again.files_sent, again.bytes_sent) == (1, 7)
    assert (remote / "f1.bin").read_bytes() == b"changed"


def test_push_skips_what_the_node_does_not_need(tmp_path: Path) -> None:
    local = tmp_path / "local"
    make_tree(local)
    report = push_dir(
        LocalTransport(), local, str(tmp_path / "r"), skip=lambda path: path.startswith("sub")
    )
    assert report.files_total == 5 and not (tmp_path / "r" / "sub").exists()


def test_push_follows_links_once_and_sends_only_regular_files(tmp_path: Path) -> None:
    """A link to a file or folder is sent as what it points to (as a dataset of links into a
    shared store expects); a link back to a folder above is not walked round and round; a
    FIFO (which would block a reader forever) and a dangling link are no files to send."""
    local, remote = tmp_path / "local", tmp_path / "remote"
    make_tree(local)
    (local / "alias").symlink_to("sub")
    (local / "sub" / "up").symlink_to("..")
    (local / "f0-link.bin").symlink_to("f0.bin")
    (local / "dangling").symlink_to("nowhere")
    os.mkfifo(local / "pipe")
    report = push_dir(LocalTransport(), local, str(remote))
    assert report.files_total == 8  # 6 files, alias/g.txt, f0-link.bin
    assert (remote / "alias" / "g.txt").read_text() == "g" and not (remote / "alias").is_symlink()
    assert (remote / "f0-link.bin").read_bytes() == (local / "f0.bin").read_bytes()
    assert not (remote / "pipe").exists() and not (remote / "dangling").exists()
    assert not (remote / "sub" / "up").exists()


def test_pull_refuses_symlinks_out_of_the_checkpoint_folder(tmp_path: Path) -> None:
    remote, home = tmp_path / "ckpt", tmp_path / "runs"
    remote.mkdir()
    (remote / "ckpt-1.pt").write_bytes(b"weights")
    os.utime(remote / "ckpt-1.pt", (time.time() - 60, time.time() - 60))  # not racy (below)
    (tmp_path / "secret").write_text("not yours")
    (remote / "evil").symlink_to(tmp_path / "secret")
    report = pull_dir(LocalTransport(), str(remote), home)
    assert report.refused == ("evil",)
    assert sorted(p.name for p in home.iterdir()) == ["ckpt-1.pt"]
    assert pull_dir(LocalTransport(), str(remote), home).files_sent == 0, "unchanged: not sent"


def test_a_file_rewritten_within_the_second_of_its_pull_is_pulled_again(tmp_path: Path) -> None:
    """Same size, same whole-second mtime, new content: "racily clean". The copy made in that
    second is fetched again on the next pull, and once made later it is left alone."""
    remote, home = tmp_path / "ckpt", tmp_path / "runs"
    remote.mkdir()
    state = remote / "count.txt"
    second = int(time.time()) + 5  # a whole second of the node's clock, all of it ahead
    state.write_text("24\n")
    os.utime(state, (second + 0.1, second + 0.1))
    assert pull_dir(LocalTransport(), str(remote), home).files_sent == 1
    state.write_text("30\n")
    os.utime(state, (second + 0.9, second + 0.9))
    assert pull_dir(LocalTransport(), str(remote), home).files_sent == 1
    assert (home / "count.txt").read_text() == "30\n"
    os.utime(state, (second - 10, second - 10))
    os.utime(home / "count.txt", (second - 10, second - 10))
    assert pull_dir(LocalTransport(), str(remote), home).files_sent == 0


class HostileListing(LocalTransport):
    """A node that lists names escaping the folder."""

    def list_files(self, remote_dir: str) -> list[RemoteFile]:
        return [
            RemoteFile("../../escape.pt", 3, 0.0),
            RemoteFile("/etc/passwd", 3, 0.0),
            RemoteFile("ok/ckpt.pt", 3, 0.0),
        ]

    def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        local.write_bytes(b"abc")


def test_pull_refuses_names_that_escape(tmp_path: Path) -> None:
    report = pull_dir(HostileListing(), "/node/ckpt", tmp_path / "runs")
    assert report.refused == ("../../escape.pt", "/etc/passwd")
    assert (tmp_path / "runs" / "ok" / "ckpt.pt").exists()
    assert not (tmp_path / "escape.pt").exists()


def test_log_follower_resumes_at_its_offset_without_loss_or_repeat(tmp_path: Path) -> None:
    remote, local = tmp_path / "node.log", tmp_path / "copy.log"
    remote.write_bytes(b"one\n")
    assert LogFollower(LocalTransport(), str(remote), local).poll() == b"one\n"
    with remote.open("ab") as handle:
        handle.write(b"two\nthree\n")
    # A new follower (a restarted client) continues where the local copy ends.
    assert LogFollower(LocalTransport(), str(remote), local).poll() == b"two\nthree\n"
    assert local.read_bytes() == remote.read_bytes()
    assert tail_lines(local, 2) == "two\nthree"


def test_pull_prunes_only_checkpoints_older_than_what_the_node_keeps(tmp_path: Path) -> None:
    node, home = tmp_path / "ckpt", tmp_path / "runs"
    node.mkdir()
    home.mkdir()
    for step in (1, 2, 3):
        (home / f"ckpt-{step:08d}.pt").write_bytes(b"old")
    (home / "metrics.jsonl").write_text("{}\n")
    (home / "my-ckpt-1.pt").write_text("not the workloads' naming")
    for step in (3, 4, 5):
        (node / f"ckpt-{step:08d}.pt").write_bytes(b"new")
    report = pull_dir(LocalTransport(), str(node), home)
    assert report.pruned == ("ckpt-00000001.pt", "ckpt-00000002.pt")
    assert sorted(p.name for p in home.iterdir()) == [
        "ckpt-00000003.pt",
        "ckpt-00000004.pt",
        "ckpt-00000005.pt",
        "metrics.jsonl",
        "my-ckpt-1.pt",
    ]


def test_pull_prunes_nested_checkpoint_folders_each_by_its_own_oldest(tmp_path: Path) -> None:
    """latent_walk trains its own small DCGAN in synthetic-dcgan/ first: `keep` holds there too."""
    node, home = tmp_path / "ckpt", tmp_path / "runs"
    (node / "synthetic-dcgan").mkdir(parents=True)
    (home / "synthetic-dcgan").mkdir(parents=True)
    (home / "other").mkdir()
    for step in (8, 16, 24, 32):
        (home / "synthetic-dcgan" / f"ckpt-{step:08d}.pt").write_bytes(b"old")
    (home / "other" / "ckpt-00000001.pt").write_bytes(b"the node lists none here")
    (home / "ckpt-00000001.pt").write_bytes(b"top level: the node lists none")
    for step in (24, 32, 40):
        (node / "synthetic-dcgan" / f"ckpt-{step:08d}.pt").write_bytes(b"new")
    report = pull_dir(LocalTransport(), str(node), home)
    assert report.pruned == ("synthetic-dcgan/ckpt-00000008.pt", "synthetic-dcgan/ckpt-00000016.pt")
    assert sorted(p.name for p in (home / "synthetic-dcgan").iterdir()) == [
        "ckpt-00000024.pt",
        "ckpt-00000032.pt",
        "ckpt-00000040.pt",
    ]
    assert (home / "other" / "ckpt-00000001.pt").exists() and (home / "ckpt-00000001.pt").exists()


def test_a_node_that_lost_its_checkpoints_prunes_nothing_at_home(tmp_path: Path) -> None:
    node, home = tmp_path / "ckpt", tmp_path / "runs"
    node.mkdir()
    home.mkdir()
    (home / "ckpt-00000009.pt").write_bytes(b"precious")
    (node / "metrics.jsonl").write_text("{}\n")
    assert pull_dir(LocalTransport(), str(node), home).pruned == ()
    assert (home / "ckpt-00000009.pt").exists()


def test_the_node_watchdog_stops_the_job_at_max_hours_without_the_client(tmp_path: Path) -> None:
    """budget.max_hours holds on the node itself: the launch script TERMs the job's process
    group when the time is up (the workload checkpoints), with no driver watching."""
    layout = NodeLayout(str(tmp_path / "job"))
    Path(layout.workdir).mkdir()
    Path(layout.env_file).write_text("")
    workload = "trap 'echo saved > on-term.txt; exit 0' TERM; sleep 60 & wait"
    Path(layout.launch_script).write_text(
        launch_script(["sh", "-c", workload], layout, max_seconds=1)
    )
    started = time.monotonic()
    LocalTransport().start(layout.launch_script, cwd=layout.workdir)
    while not Path(layout.exit_code).exists() and time.monotonic() - started < 20:
        time.sleep(0.05)
    assert Path(layout.exit_code).read_text().strip() == "0"
    assert time.monotonic() - started < 10
    assert (tmp_path / "job" / "on-term.txt").read_text() == "saved\n"
    assert "budget.max_hours reached" in Path(layout.log).read_text()
