"""The launch script that runs a workload detached on a node, the same on every transport.

It records its pid (the process group), runs the workload with its output in the job log, forwards
TERM to it (so the workload can checkpoint), enforces `budget.max_hours` on the node itself (a
lost client cannot overspend), and writes the exit code last, atomically. Every value is quoted.
"""

from __future__ import annotations

import shlex

from gpujobs.runtime.node_layout import NodeLayout


def node_notify_script() -> str:
    """notify_node.sh: how the node itself posts to the user's webhooks (curl or python3)."""
    from importlib.resources import files

    return files("gpujobs.runtime").joinpath("notify_node.sh").read_text()


def env_file(environment: dict[str, str]) -> str:
    """Shell `export` lines; the file is written 0600 because values may be secrets."""
    return "".join(
        f"export {key}={shlex.quote(value)}\n" for key, value in sorted(environment.items())
    )


def launch_script(
    argv: list[str], layout: NodeLayout, *, max_seconds: float | None, cwd: str | None = None
) -> str:
    """The script; its shell's pid is the job's process group (it runs in a session of its own).

    TERM is sent to the whole group (a graceful stop, teardown), so that every process of a
    custom command hears it; the script itself ignores TERM so it lives to record the exit code.
    """
    q = shlex.quote
    watchdog = stop_watchdog = ""
    if max_seconds is not None:
        # The node's own timer for budget.max_hours: TERM the group (the workload checkpoints),
        # and KILL it a minute later from a helper that ignores the TERM. It starts before the
        # script ignores TERM (a subshell inherits that), and ends its own `sleep` when told to
        # stop: otherwise both would outlive the job and signal a recycled group hours later.
        watchdog = (
            "( trap 'kill \"$sleeper\" 2>/dev/null; exit 0' TERM\n"
            f"  sleep {max(int(max_seconds), 1)} & sleeper=$!\n"
            '  wait "$sleeper"\n'
            f'  echo "gpujobs: budget.max_hours reached, stopping the job" >> {q(layout.log)}\n'
            f"  echo max_hours > {q(layout.stop_reason)}\n"
            # Tell the user (a webhook, ntfy) before stopping: the laptop may be gone.
            f"  [ -f {q(layout.notify_targets)} ] && sh {q(layout.notify_script)} "
            f"{q(layout.notify_targets)} budget_stop "
            "'budget.max_hours reached: the node stopped the job and brings down its machine'\n"
            # The KILL helper ends as soon as the script does, so it never outlives the job.
            "  ( trap '' TERM; n=0\n"
            '    while [ "$n" -lt 60 ] && kill -0 $$ 2>/dev/null; do sleep 1; n=$((n + 1)); done\n'
            '    [ "$n" -ge 60 ] && kill -KILL -$$ 2>/dev/null ) &\n'
            "  kill -TERM -$$ 2>/dev/null ) &\n"
            "watchdog=$!\n"
        )
        stop_watchdog = 'kill "$watchdog" 2>/dev/null; wait "$watchdog" 2>/dev/null\n'
    return (
        "#!/bin/sh\n"
        "# Written by gpujobs: runs the job detached and records its pid and exit code.\n"
        f"cd {q(cwd or layout.workdir)} || exit 1\n"
        f"echo $$ > {q(layout.pid)}.tmp && mv {q(layout.pid)}.tmp {q(layout.pid)}\n"
        f". {q(layout.env_file)}\n"
        f"{shlex.join(argv)} >> {q(layout.log)} 2>&1 < /dev/null &\n"
        "child=$!\n"
        f"{watchdog}"
        "trap '' TERM\n"
        'wait "$child"; rc=$?\n'
        "# Should a signal still interrupt wait, wait again for the workload's own exit status.\n"
        'while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done\n'
        f"{stop_watchdog}"
        f'echo "$rc" > {q(layout.exit_code)}.tmp && '
        f"mv {q(layout.exit_code)}.tmp {q(layout.exit_code)}\n"
    )


def step_script(
    argv: list[str], layout: NodeLayout, *, cwd: str, marker: str | None, banner: str
) -> str:
    """The script of a long setup step on one node (a job's `setup:`, an image build): its
    output goes to the job log (so it streams like the job's own), success leaves `marker`
    where one is given (the next job skips the step), and the exit code is written last,
    atomically, as the launch script does."""
    q = shlex.quote
    exit_file = layout.setup_exit_code
    mark = ""
    if marker is not None:
        mark = (
            f'if [ "$rc" -eq 0 ]; then mkdir -p {q(marker.rsplit("/", 1)[0])} && '
            f"date > {q(marker)}; fi\n"
        )
    return (
        "#!/bin/sh\n"
        "# Written by gpujobs: one step of setting this node up.\n"
        f"cd {q(cwd)} || {{ echo 1 > {q(exit_file)}; exit 1; }}\n"
        f"[ -f {q(layout.env_file)} ] && . {q(layout.env_file)}\n"
        f"echo {q('gpujobs: ' + banner)} >> {q(layout.log)}\n"
        f"{shlex.join(argv)} >> {q(layout.log)} 2>&1 < /dev/null\n"
        "rc=$?\n"
        f"{mark}"
        f'echo "$rc" > {q(exit_file)}.tmp && mv {q(exit_file)}.tmp {q(exit_file)}\n'
    )
