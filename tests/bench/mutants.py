"""Tests that prove they can fail: break one guard at a time in a copy of the tree and show the
tests that watch it going red (issue 24).

Each mutant is a small source edit that brings back a real defect:
  teardown's kill    stop_job.sh finds nothing by the job's environment (only the process
                     group, as before: a background child outlives its job)
  env-file quoting   the env file writes values in double quotes (the shell expands $(...))
  secret redaction   errors.redact returns its text unchanged

For each, the same tests run first on the unchanged copy (they must pass) and then on the
mutated one (they must fail). Prints a table; exits 1 if a mutant survives.

    python3 tests/bench/mutants.py [--only NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    before: str
    after: str
    tests: tuple[str, ...]


MUTANTS = (
    Mutant(
        "teardown's kill",
        "gpujobs/runtime/stop_job.sh",
        'grep -lzxF -- "$marker" /proc/[0-9]*/environ 2>/dev/null',
        "false",
        (
            "tests/test_leftover_processes.py",
            "tests/test_fault_matrix.py::test_fault_matrix[local-leaves-a-child]",
        ),
    ),
    Mutant(
        "env-file quoting",
        "gpujobs/runtime/launcher.py",
        'f"export {key}={shlex.quote(value)}\\n"',
        "f'export {key}=\"{value}\"\\n'",
        ("tests/test_env_through_a_shell.py",),
    ),
    Mutant(
        "secret redaction",
        "gpujobs/errors.py",
        '    """`text` with every registered secret replaced by ***, the longest first."""\n',
        '    """`text` with every registered secret replaced by ***, the longest first."""\n'
        "    return text\n",
        ("tests/test_secret_redaction.py",),
    ),
)


def copy_tree(into: Path) -> None:
    """The working tree as it is (tracked and new files, not ignored ones)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = REPO / name
        if source.is_file():
            target = into / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def run_tests(tree: Path, tests: tuple[str, ...]) -> tuple[bool, float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
        cwd=tree, env=env, capture_output=True, text=True,
    )  # fmt: skip
    tail = (done.stdout.strip().splitlines() or [""])[-1]
    return done.returncode == 0, time.monotonic() - started, tail


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="run one mutant, by name")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if args.only in (None, m.name)]
    rows, survived = [], 0
    with tempfile.TemporaryDirectory(prefix="gpujobs-mutants-") as folder:
        tree = Path(folder)
        copy_tree(tree)
        for mutant in chosen:
            source = tree / mutant.path
            original = source.read_text()
            if mutant.before not in original:
                raise SystemExit(f"{mutant.name}: {mutant.path} no longer holds the guarded code")
            clean_ok, clean_s, _ = run_tests(tree, mutant.tests)
            source.write_text(original.replace(mutant.before, mutant.after, 1))
            try:
                mutated_ok, mutated_s, tail = run_tests(tree, mutant.tests)
            finally:
                source.write_text(original)
            caught = clean_ok and not mutated_ok
            survived += not caught
            clean = "green" if clean_ok else "RED"
            mutated = "green" if mutated_ok else "red"
            verdict = "caught" if caught else "SURVIVED"
            rows.append((mutant.name, clean, mutated, verdict, tail, clean_s + mutated_s))
    print(
        f"{'mutant':<18} {'unchanged':<10} {'mutated':<8} {'verdict':<9} {'s':>6}  tests' last line"
    )
    for name, clean, mutated, verdict, tail, seconds in rows:
        print(f"{name:<18} {clean:<10} {mutated:<8} {verdict:<9} {seconds:>6.0f}  {tail}")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
