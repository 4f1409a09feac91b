"""`status` with many jobs stored reads only what it shows (issue 24 item 10, issue 25)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from gpujobs.cli.entry import quick_status_options
from gpujobs.state import Store
from tests.conftest import gpujobs_cli


def fill(home: Path, finished: int, driverless: int) -> None:
    Store(home / "state.db").close()
    rows = []
    for i in range(finished + driverless):
        done = i < finished
        rows.append(
            (f"job-{i:06d}", "bulk", "SUCCEEDED" if done else "RUNNING", '{"name": "bulk"}',
             "spec.yaml", f"runs/job-{i:06d}", 1000.0 + i, 1000.0 + i, None if not done else 1.0,
             None if done else 999_999, 0)
        )  # fmt: skip
    with sqlite3.connect(home / "state.db") as db:
        db.executemany(
            "INSERT INTO jobs (id, name, state, spec_json, spec_path, runs_dir, created_at, "
            "updated_at, finished_at, driver_pid, driver_lost) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            rows,
        )


def heavy_modules_loaded(argv: list[str], env: dict[str, str] | None = None) -> str:
    """Which of typer, pydantic and the spec module `gpujobs ARGV` loads (the quick path loads
    none), as the list's text."""
    probe = (
        f"import sys; sys.argv = ['gpujobs', *{argv!r}]\n"
        "from gpujobs.cli.entry import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('typer', 'pydantic', 'gpujobs.spec') if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return loaded.stdout.strip().splitlines()[-1]


def test_all_pages_through_every_job_newest_first(tmp_path: Path) -> None:
    fill(tmp_path / "home", 2_950, 0)
    first = gpujobs_cli("status", "--all", "--json")
    assert first.returncode == 0, first.stderr
    page = json.loads(first.stdout)
    assert [job["id"] for job in page[:2]] == ["job-002949", "job-002948"]
    assert len(page) == 100
    assert "page 1 of 30 (2,950 jobs, newest first): gpujobs status --all --page 2" in first.stderr
    last = gpujobs_cli("status", "--all", "--page", "30", "--json")
    assert [job["id"] for job in json.loads(last.stdout)][-1] == "job-000000"
    past = gpujobs_cli("status", "--all", "--page", "31")
    assert "past the last (30)" in past.stderr


def test_plain_status_shows_a_bounded_list_of_driverless_jobs(tmp_path: Path) -> None:
    fill(tmp_path / "home", 10, 300)
    done = gpujobs_cli("status", "--json")
    shown = json.loads(done.stdout)
    assert 20 <= len(shown) <= 70
    assert "older job(s) not shown: gpujobs status --all" in done.stderr
    # The first look found them driverless and said so once; the next reads no lock files.
    with sqlite3.connect(tmp_path / "home" / "state.db") as db:
        lost = db.execute("SELECT COUNT(*) FROM jobs WHERE driver_lost = 1").fetchone()[0]
    assert lost == len([job for job in shown if job["state"] == "RUNNING"])


def test_quick_status_path_answers_as_the_full_cli_without_loading_typer(tmp_path: Path) -> None:
    """`gpujobs status` in its plain forms skips the CLI framework (cli/entry.py); what it
    prints is the full CLI's (`--debug` sends the same command through typer)."""
    fill(tmp_path / "home", 30, 2)
    for args in (["status"], ["status", "--json"], ["status", "--all", "--page=1", "--json"]):
        quick, full = gpujobs_cli(*args), gpujobs_cli("--debug", *args)
        assert quick.returncode == full.returncode == 0, (quick.stderr, full.stderr)
        if "--json" in args:
            assert json.loads(quick.stdout) == json.loads(full.stdout)
        else:
            assert quick.stdout.splitlines()[:3] == full.stdout.splitlines()[:3]
        assert quick.stderr == full.stderr
    assert heavy_modules_loaded(["status", "--json"]) == "[]"
    unknown = gpujobs_cli("status", "--no-such-flag")
    assert unknown.returncode == 2 and "No such option" in unknown.stderr  # typer's own words
    missing = gpujobs_cli("status", "no-such-job")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def test_quick_status_options_take_only_the_plain_forms() -> None:
    assert quick_status_options([]) == (None, False, False, 1)
    assert quick_status_options(["abc", "--json"]) == ("abc", True, False, 1)
    assert quick_status_options(["-a", "--page", "3"]) == (None, False, True, 3)
    assert quick_status_options(["--all", "--page=2"]) == (None, False, True, 2)
    for odd in (["--page"], ["--page", "0"], ["--page=x"], ["-h"], ["a", "b"], ["--help"]):
        assert quick_status_options(odd) is None, odd


def test_quick_budget_path_answers_as_the_full_cli_without_loading_typer(tmp_path: Path) -> None:
    """`gpujobs budget`, `--json` and `--all` skip the CLI framework too; a subcommand, help or
    a typo goes to typer."""
    from gpujobs.cli.entry import quick_budget_options
    from gpujobs.state import Billing

    fill(tmp_path / "home", 30, 0)
    store = Store(tmp_path / "home" / "state.db")
    for index in range(25):  # more than the report shows without --all
        billing = Billing("g4dn.xlarge", "us-east-1", False, 0.5 + index, started_at=5000.0)
        store.add_node(f"job-{index:06d}", node_id="n0", provider="aws", node_json="{}",
                       billing=billing, now=5000.0)  # fmt: skip
        store.mark_node_terminated(f"job-{index:06d}", "n0", now=5000.0 + 3600)
    store.set_budget(provider=None, monthly=False, limit_usd=1000.0, now=5000.0)
    store.close()
    env = {**os.environ, "GPUJOBS_HOME": str(tmp_path / "home")}
    for args in (["budget"], ["budget", "--json"], ["budget", "-a", "--json"]):
        quick, full = gpujobs_cli(*args, env=env), gpujobs_cli("--debug", *args, env=env)
        assert quick.returncode == full.returncode == 0, (quick.stderr, full.stderr)
        if "--json" in args:
            answers = [json.loads(done.stdout) for done in (quick, full)]
            for answer in answers:
                answer.pop("as_of")
            assert answers[0] == answers[1]
            assert len(answers[0]["jobs"]) == (25 if "-a" in args else 20)
        else:
            assert quick.stdout.splitlines()[:8] == full.stdout.splitlines()[:8]
    assert quick_budget_options([]) == (False, False)
    assert quick_budget_options(["--all", "--json"]) == (True, True)
    for odd in (["set", "5"], ["--help"], ["--jsn"], ["unset"]):
        assert quick_budget_options(odd) is None, odd
    assert heavy_modules_loaded(["budget", "--json"], env) == "[]"
