"""The slurm provider's pieces that need no cluster: the sbatch command line and batch script
(quoting, --time never UNLIMITED), what sinfo and squeue print, and the `slurm:` spec section's
errors. The script is run for real with sh."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest
from pydantic import ValidationError

from gpujobs.providers.slurm.models import (
    parse_gpus,
    parse_sinfo,
    parse_squeue,
    parse_time_limit,
)
from gpujobs.providers.slurm.sbatch import (
    render_group_script,
    render_script,
    sbatch_argv,
    time_limit_s,
)
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.spec import JobSpec
from tests.conftest import gpujobs_cli, write_spec

HOSTILE = "/shared/it's $(touch pwned) 100%j"


def _spec(**slurm: object) -> JobSpec:
    return JobSpec.model_validate(
        {
            "name": "t",
            "command": "true",
            "providers": ["slurm"],
            "resources": {"gpus": 2, "cpus": 4, "memory_gb": 7.5},
            "slurm": {"login": "alice@login.cluster.edu", **slurm},
        }
    )


def test_every_option_is_one_word_and_the_folder_survives_quoting() -> None:
    spec = _spec(
        partition="gpu-a100",
        account="lab_42",
        qos="normal",
        gres="gpu:a100",
        constraint="a100&ib",
        sbatch_options={"mail-type": "END", "exclusive": True, "requeue": False},
    )
    layout = NodeLayout(f"{HOSTILE}/work/t-1")
    argv = sbatch_argv("t-1", spec, layout, f"{layout.workdir}/job.sbatch",
                       partition="gpu-a100", time_s=3720)  # fmt: skip
    assert shlex.split(shlex.join(argv)) == argv
    assert argv[:3] == ["sbatch", "--parsable", "--job-name=gpujobs-t-1"]
    assert "--comment=gpujobs-job=t-1" in argv
    assert {"--nodes=1", "--ntasks-per-node=1", "--cpus-per-task=4", "--mem=7680M"} <= set(argv)
    assert {"--gres=gpu:a100:2", "--time=62", "--partition=gpu-a100", "--account=lab_42"} <= set(
        argv
    )
    assert {"--qos=normal", "--constraint=a100&ib", "--mail-type=END", "--exclusive"} <= set(argv)
    assert not any(word.startswith("--requeue") for word in argv), "false leaves it out"
    # sbatch expands %j in --output: the folder's own % is doubled.
    assert f"--output={HOSTILE.replace('%', '%%')}/work/t-1/job.log" in argv
    assert argv[-1] == f"{layout.workdir}/job.sbatch"


def test_time_comes_from_the_cap_within_the_partition_and_is_never_unlimited() -> None:
    assert time_limit_s(3600, None) == 3600 + 120  # the cap, and time to checkpoint
    assert time_limit_s(3600, 1800) == 1800  # the partition's limit bounds it
    assert time_limit_s(None, 7200) == 7200
    assert time_limit_s(None, None) == 24 * 3600  # no cap at all: a day, not UNLIMITED
    assert time_limit_s(5, None) == 125
    argv = sbatch_argv("t-1", _spec(), NodeLayout("/s/work/t-1"), "/s/job.sbatch",
                       partition=None, time_s=time_limit_s(None, None))  # fmt: skip
    assert "--time=1440" in argv
    assert not any(word.startswith("--partition") for word in argv)


def test_the_batch_script_records_its_job_and_forgets_an_old_exit_code_on_requeue(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "it's a $(touch pwned) folder"
    folder.mkdir()
    layout = NodeLayout(str(folder))
    Path(layout.launch_script).write_text('echo "launched in $PWD" >> job.log\n')
    script = folder / "job.sbatch"
    script.write_text(render_script("t-1", layout))
    Path(layout.exit_code).write_text("143\n")
    env = {**os.environ, "SLURM_JOB_ID": "77", "SLURM_RESTART_COUNT": "1"}
    subprocess.run(["sh", str(script)], check=True, env=env, cwd=tmp_path)
    assert (folder / "slurm-job-id").read_text() == "77\n"
    assert not Path(layout.exit_code).exists(), "a requeued run starts without the old code"
    log = (folder / "job.log").read_text()
    assert "slurm restarted job 77 (restart 1)" in log
    assert f"launched in {folder}" in log
    assert not (tmp_path / "pwned").exists()
    checked = subprocess.run(
        ["shellcheck", "-S", "warning", "-s", "sh", "-"],
        input=script.read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout


def test_sinfo_and_squeue_as_clusters_print_them() -> None:
    sinfo = (
        "gpu*|up|12|64|512000|gpu:a100:4(S:0-1)|2-00:00:00\n"
        "gpu*|up|4|32|256000|gpu:a100:2|2-00:00:00\n"
        "cpu|down|40|128+|1024000|(null)|infinite\n"
    )
    gpu, gpu_small, cpu = parse_sinfo(sinfo)
    assert (gpu.name, gpu.default, gpu.up, gpu.gpu_type, gpu.gpus) == ("gpu", True, True, "a100", 4)
    assert gpu.time_limit_s == 48 * 3600 and gpu_small.gpus == 2
    assert (cpu.up, cpu.cpus, cpu.gpus, cpu.time_limit_s) == (False, 128, 0, None)
    assert parse_gpus("gpu:2,shard:8") == (None, 2)
    assert [parse_time_limit(t) for t in ("30", "5:30", "1:00:00", "1-12")] == [
        1800,
        330,
        3600,
        36 * 3600,
    ]
    [job] = parse_squeue("812|gpujobs-t-1|PENDING|QOSMaxJobsPerUser|4294|gpu|gpujobs-job=t-1\n")
    assert (job.job_id, job.state, job.reason, job.partition, job.live) == (
        812,
        "PENDING",
        "QOSMaxJobsPerUser",
        "gpu",
        True,
    )


@pytest.mark.parametrize(
    ("slurm", "words"),
    [
        ({"login": "a@b", "sbatch_options": {"time": "1:00:00"}}, "--time is set by gpujobs"),
        ({"login": "a@b", "partition": "gpu; rm -rf ~"}, "is not a Slurm name"),
        ({"login": "a@b", "gres": "gpu:a100:4"}, "no count"),
        ({"login": "not a host!"}, "is not user@host[:port]"),
        ({"login": "a@b", "workdir": "relative/dir"}, "give an absolute path"),
    ],
)
def test_the_slurm_section_refuses_what_would_break_sbatch(
    slurm: dict[str, object], words: str
) -> None:
    with pytest.raises(ValidationError, match=words.replace("[", r"\[").replace("]", r"\]")):
        _spec(**slurm)


def test_a_spec_listing_slurm_without_its_section_is_one_clear_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: t\ncommand: 'true'\nproviders: [slurm]\n")
    done = gpujobs_cli("plan", str(spec))
    assert done.returncode == 2
    assert "add `slurm: {login: user@login-node}`" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_multi_node_script_quotes_its_folder_and_passes_shellcheck(tmp_path: Path) -> None:
    layout = NodeLayout(f"{HOSTILE}/work/t-1")
    script = render_group_script("t-1", layout, 2)
    assert f"cd {shlex.quote(layout.workdir)} || exit 1" in script
    assert "srun --nodes=2 --ntasks-per-node=1" in script
    checked = subprocess.run(
        ["shellcheck", "-S", "warning", "-s", "sh", "-"],
        input=script,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stdout
