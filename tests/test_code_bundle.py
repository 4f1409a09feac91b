"""The bundled workloads go to a host once (`<cache>/code/<digest>`), each job links to that
copy, and the host keeps only a few old bundles."""

from __future__ import annotations

import os
import time
from pathlib import Path

from gpujobs.lifecycle.node_session import KEEP_BUNDLES, NodeSession
from gpujobs.remote.transport import LocalTransport
from gpujobs.runtime.bundle import bundle_digest
from gpujobs.runtime.node_layout import NodeLayout


def session(root: Path, job: str) -> NodeSession:
    layout = NodeLayout(str(root / "work" / job))
    node = NodeSession(LocalTransport(), layout, root / f"{job}.log")
    node.make_folders()
    return node


def test_the_bundle_is_sent_once_per_host_and_each_job_links_to_it(tmp_path: Path) -> None:
    root = tmp_path / "host root"
    first = session(root, "job-1").push_code()
    assert first is not None and first.files_sent > 5
    shared = root / "cache" / "code" / bundle_digest()
    assert (shared / "DIGEST").read_text().strip() == bundle_digest()
    assert session(root, "job-2").push_code() is None, "the second job sends nothing"
    for job in ("job-1", "job-2"):
        code = root / "work" / job / "code" / "jobs"
        assert code.is_symlink() and code.resolve() == (shared / "jobs").resolve()
        assert (code / "__init__.py").is_file()
    assert [p.name for p in (root / "cache" / "code").iterdir()] == [bundle_digest()]


def test_a_half_sent_bundle_is_never_linked_and_is_sent_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    shared = root / "cache" / "code" / bundle_digest()
    (shared / "jobs").mkdir(parents=True)  # a copy cut short: no DIGEST written
    assert session(root, "job-1").push_code() is not None
    assert (root / "work" / "job-1" / "code" / "jobs" / "__init__.py").is_file()


def test_sending_a_new_bundle_prunes_old_ones_beyond_the_newest_few(tmp_path: Path) -> None:
    """Each edit of the workloads is a new digest; a host keeps the newest KEEP_BUNDLES and
    whatever was sent in the last week, and drops the rest (a crashed send's leftover too)."""
    code = tmp_path / "root" / "cache" / "code"
    month_ago = time.time() - 30 * 86400
    old = [f"{index:064x}" for index in range(KEEP_BUNDLES + 3)]
    for index, name in enumerate(old):
        (code / name / "jobs").mkdir(parents=True)
        stamp = month_ago + index * 60  # distinct mtimes: the later ones are newer
        os.utime(code / name, (stamp, stamp))
    crashed = code / f"{'e' * 64}.job-0.partial"
    crashed.mkdir()
    os.utime(crashed, (month_ago, month_ago))
    recent = code / ("f" * 64)
    (recent / "jobs").mkdir(parents=True)
    os.utime(recent, (time.time() - 3 * 86400,) * 2)  # sent this week: kept whatever its rank

    assert session(tmp_path / "root", "job-1").push_code() is not None
    kept = {path.name for path in code.iterdir()}
    # The new bundle, the recent one and the newest old ones fill the KEEP_BUNDLES places.
    assert kept == {bundle_digest(), recent.name, *old[-(KEEP_BUNDLES - 2) :]}, sorted(kept)
    assert (tmp_path / "root" / "work" / "job-1" / "code" / "jobs" / "__init__.py").is_file()
