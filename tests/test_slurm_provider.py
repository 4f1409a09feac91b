"""The slurm provider's calls against the real two-node cluster (tests/slurm_cluster.py) through
the loopback sshd as its login node: offers from sinfo and why a partition is refused, and
what `gpujobs gc` finds and removes."""

from __future__ import annotations

import subprocess
from pathlib import Path

from gpujobs.providers.base import Availability, SupportsBatchJobs, SupportsSweep
from gpujobs.providers.slurm import SlurmProvider
from gpujobs.remote.ssh import HostKeyPins
from gpujobs.spec import JobSpec
from gpujobs.testing.ssh import LoopbackSshd
from tests.conftest import gpujobs_cli, write_spec
from tests.slurm_cluster import SlurmCluster


def _provider(sshd: LoopbackSshd, tmp_path: Path, **spec: object) -> SlurmProvider:
    parsed = JobSpec.model_validate(
        {
            "name": "t",
            "command": "true",
            "providers": ["slurm"],
            "slurm": {
                "login": sshd.target,
                "identity_file": str(sshd.client_key),
                "workdir": str(tmp_path / "shared"),
                **spec.pop("slurm", {}),  # type: ignore[dict-item]
            },
            **spec,
        }
    )
    provider = SlurmProvider(None, HostKeyPins(tmp_path / "known_hosts")).for_spec(parsed)
    assert isinstance(provider, SlurmProvider)
    return provider


def test_offers_are_the_partitions_as_sinfo_has_them(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    provider = _provider(sshd, tmp_path, slurm={"cost_per_hour": 0.25})
    assert isinstance(provider, SupportsBatchJobs) and isinstance(provider, SupportsSweep)
    [offer] = provider.offers(JobSpec.model_validate({"name": "t", "command": "x"}).resources)
    assert (offer.label, offer.gpus, offer.cpus, offer.memory_gb) == ("slurm/debug", 1, 2, 2.0)
    assert offer.max_nodes == 2 and offer.price_per_hour == 0.25
    assert offer.availability == Availability.AVAILABLE


def test_a_partition_too_short_for_the_cap_or_missing_says_so(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    too_long = _provider(sshd, tmp_path, budget={"max_hours": 3})
    [offer] = too_long.offers(too_long.spec.resources)  # type: ignore[union-attr]
    assert offer.availability == Availability.NOT_AVAILABLE
    assert offer.unavailable_reason == (
        "partition debug allows a job 2 h at most, and budget.max_hours is 3"
    )
    missing = _provider(sshd, tmp_path, slurm={"partition": "gpu-a100"})
    [offer] = missing.offers(missing.spec.resources)  # type: ignore[union-attr]
    assert offer.unavailable_reason == "no such partition (sinfo: debug)"
    spec = write_spec(
        tmp_path,
        f"""
        name: t
        command: 'true'
        providers: [slurm]
        budget: {{max_hours: 3}}
        slurm: {{login: "{sshd.target}", identity_file: {sshd.client_key}}}
        """,
    )
    planned = gpujobs_cli("plan", str(spec))
    assert "allows a job 2 h at most" in planned.stdout + planned.stderr


def test_gc_finds_jobs_named_gpujobs_and_their_folders_and_removes_them(
    slurm: SlurmCluster, sshd: LoopbackSshd, tmp_path: Path
) -> None:
    provider = _provider(sshd, tmp_path)
    folder = tmp_path / "shared" / "work" / "orphan-1"
    folder.mkdir(parents=True)
    second = tmp_path / "shared" / "work" / "orphan-1-node1"  # node 1 of a two-node job
    second.mkdir()
    batch_id = subprocess.run(
        ["sbatch", "--parsable", "--job-name=gpujobs-orphan-1", "--output=/dev/null",
         "--wrap", "sleep 300"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    try:
        found = {(r.kind, r.job_id, r.resource_id) for r in provider.tagged()}
        assert ("slurm-job", "orphan-1", batch_id) in found
        assert ("workdir", "orphan-1", str(folder)) in found
        assert ("workdir", "orphan-1", str(second)) in found
        for resource in provider.tagged():
            provider.delete(resource)
        assert provider.tagged() == []
        assert not folder.exists() and not second.exists()
    finally:
        subprocess.run(["scancel", batch_id], check=False)
