"""Errors never show a value from `env`, at any length (issue 24, item 7)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpujobs.errors import redact, register_secrets
from gpujobs.state import JobState, Store
from tests.conftest import gpujobs_cli, write_spec

SECRET = "hunter2-s3cr3t-value"


@pytest.mark.parametrize(
    "env",
    [
        f"{{WANDB_API_KEY: [{SECRET}]}}",  # a list where a string belongs
        f"{{WANDB_API_KEY: [{SECRET * 40}]}}",  # long: no prefix of it either
        f"{{WANDB_API_KEY: {{nested: {SECRET}}}}}",
        f"{{'1BAD KEY': {SECRET}}}",  # a bad name: the value is not echoed with it
    ],
)
def test_a_bad_env_entry_is_named_without_its_value(tmp_path: Path, env: str) -> None:
    spec = write_spec(tmp_path, f"name: x\ncommand: echo hi\nenv: {env}\n")
    done = gpujobs_cli("plan", str(spec))
    assert done.returncode == 2
    assert "env" in done.stderr
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr


def test_a_secret_in_a_failing_command_is_not_shown_or_stored(tmp_path: Path, store: Store) -> None:
    """The workload prints the secret and fails: its last lines go into the job's error, which
    (stored, in its events, and as the CLI prints it) carries *** in the secret's place. The
    streamed log is the workload's own output and stays as it wrote it."""
    spec = write_spec(
        tmp_path,
        f"""
        name: leaks
        command: "sh -c 'echo the key is $0; exit 3' {SECRET}"
        env: {{API_TOKEN: {SECRET}}}
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode != 0
    assert SECRET not in done.stderr
    assert "the key is ***" in done.stderr
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert SECRET not in json.dumps(job)
    assert all(SECRET not in (e.message or "") for e in store.events(job["id"]))


def test_redact_replaces_every_registered_value_longest_first() -> None:
    register_secrets({"A": "abcdefgh", "B": ["abcd"], "C": {"d": 123456}, "E": "x"})
    assert redact("key abcdefgh and abcd and 123456 and x") == "key *** and *** and *** and x"


def test_the_store_redacts_what_it_records(store: Store) -> None:
    register_secrets(["p4ssw0rd-zz"])
    record = store.create_job(
        job_id="j1", name="x", spec_json="{}", spec_path="x", runs_dir="r", driver_pid=None
    )
    store.transition(record.id, JobState.FAILED, "boom p4ssw0rd-zz")
    store.set_outcome(record.id, exit_code=1, error="bad p4ssw0rd-zz")
    assert "p4ssw0rd" not in str(store.job(record.id).error)
    assert all("p4ssw0rd" not in e.message for e in store.events(record.id))


def test_an_env_value_too_long_for_linux_is_refused_truly(tmp_path: Path) -> None:
    """A value past MAX_ARG_STRLEN makes every exec on the node fail (the launch script's own
    `mv` too, so no exit code was ever written): refused up front, naming the key, not the
    value, and saying what to do instead."""
    spec = write_spec(tmp_path, f"name: x\ncommand: echo hi\nenv: {{BIG: {'s' * 140_000}}}\n")
    done = gpujobs_cli("launch", str(spec))
    assert done.returncode == 2
    assert "'BIG' is 140,004 bytes" in done.stderr and "files:" in done.stderr
    assert "sss" not in done.stderr
    many = ", ".join(f"K{i}: {'v' * 100_000}" for i in range(12))
    spec = write_spec(tmp_path, f"name: x\ncommand: echo hi\nenv: {{{many}}}\n")
    done = gpujobs_cli("launch", str(spec))
    assert done.returncode == 2 and "the variables total" in done.stderr


def test_an_env_value_just_under_the_limit_arrives_whole(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path,
        "name: x\n"
        """command: 'printf %s "$BIG" | wc -c > "$GPUJOBS_CKPT_DIR/n.txt"'\n"""
        f"env: {{BIG: {'s' * 120_000}}}\n",
    )
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    [job] = json.loads(gpujobs_cli("status", "--json").stdout)
    assert (Path(job["runs_dir"]) / "n.txt").read_text().strip() == "120000"
