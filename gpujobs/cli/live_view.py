"""`gpujobs ssh`, `gpujobs ssh-config` and `gpujobs forward`: onto a live job's node. Each is
registered with one line in app.py; everything they decide is in gpujobs.api.live."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

if TYPE_CHECKING:
    from gpujobs.api import Controller

ControllerFactory = Callable[[], "Controller"]
ErrorsToExit = Callable[[], AbstractContextManager[None]]

_JOB = typer.Argument(help="A job id, id prefix or name.")
_NODE = typer.Option("--node", min=0, help="A multi-node job's node (its rank).")


def register_ssh(app: typer.Typer, controllers: ControllerFactory, errors: ErrorsToExit) -> None:
    @app.command(context_settings={"allow_interspersed_args": False})
    def ssh(
        job: Annotated[str, _JOB],
        command: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Argument(help="After --: one command to run instead of a shell."),
        ] = None,
        node: Annotated[int, _NODE] = 0,
    ) -> None:
        """A shell (or one command, after --) on a live job's node, in the job's folder and,
        on the docker runtime, inside its container; with the job's own key and pinned host
        key. One word after -- is a shell line ("ls *.pt"); several are quoted as given."""
        with errors():
            from gpujobs.api.live import node_access, shell_command

            words = list(command or [])
            if words[:1] == ["--"]:  # click keeps the separator once arguments stop interleaving
                words = words[1:]
            controller = controllers()
            access = node_access(controller, job, node)
            tty = sys.stdin.isatty() and sys.stdout.isatty()
            planned = shell_command(controller, access, words, tty=tty)
            if planned.cwd is not None:
                os.chdir(planned.cwd)
            sys.stdout.flush()
            sys.stderr.flush()
            os.execvp(planned.argv[0], planned.argv)


def register_ssh_config(
    app: typer.Typer, controllers: ControllerFactory, errors: ErrorsToExit
) -> None:
    @app.command(name="ssh-config")
    def ssh_config(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Print Host entries (gpujobs-<job>[-K]) for every live job's remote nodes, for
        ~/.ssh/config or VS Code Remote-SSH: `gpujobs ssh-config >> ~/.ssh/config`."""
        with errors():
            from gpujobs.api.live import access_json, remote_nodes, ssh_config_text

            controller = controllers()
            accesses = remote_nodes(controller)
            if as_json:
                rows = [access_json(controller, access) for access in accesses]
                sys.stdout.write(json.dumps(rows, indent=2) + "\n")
                return
            if not accesses:
                sys.stderr.write("no live job has a remote node\n")
            sys.stdout.write(ssh_config_text(controller, accesses))


def register_forward(
    app: typer.Typer, controllers: ControllerFactory, errors: ErrorsToExit
) -> None:
    @app.command()
    def forward(
        job: Annotated[str, _JOB],
        ports: Annotated[
            list[str],
            typer.Argument(
                metavar="PORT[:LOCAL]...",
                help="The node's port, and the local one (default: the same, or any free).",
            ),
        ],
        node: Annotated[int, _NODE] = 0,
    ) -> None:
        """Forward a live job's ports to 127.0.0.1 over its SSH connection (never through a
        cloud firewall), until Ctrl-C or the job ends; reconnects after a dropped link."""
        with errors():
            from gpujobs.api.live import node_access, open_forward, parse_port_pair

            pairs = [parse_port_pair(text) for text in ports]
            controller = controllers()
            access = node_access(controller, job, node)

            def note(message: str) -> None:
                sys.stderr.write(f"{message}\n")

            opened = []
            try:
                for remote, local in pairs:
                    forward = open_forward(controller, access, remote, local, on_note=note)
                    opened.append(forward)
                    sys.stdout.write(f"{forward.url}  ->  {access.alias}:{remote}\n")
                sys.stdout.flush()
                note("forwarding; Ctrl-C stops")
                with contextlib.suppress(KeyboardInterrupt):
                    while not controller.store.job(access.job_id).state.is_terminal:
                        time.sleep(1.0)
                    note(f"{access.job_id} ended; forwarding stopped")
            finally:
                for forward in opened:
                    forward.close()


def register_dev(app: typer.Typer, controllers: ControllerFactory, errors: ErrorsToExit) -> None:
    @app.command()
    def dev(
        spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="The job spec (YAML).")],
        runs_dir: Annotated[
            Path, typer.Option(help="Where the notebooks come home: RUNS_DIR/<job id>/.")
        ] = Path("runs"),
    ) -> None:
        """An interactive session: JupyterLab on the node with your code and dataset in place,
        forwarded here (its URL with the token is printed), under the spec's budget caps, and
        stopped after dev.idle_minutes without kernel or GPU use; the notebooks and outputs
        come home before teardown. Ctrl-C ends it the same way."""
        with errors():
            from rich.console import Console

            from gpujobs.api import CancelToken
            from gpujobs.api.dev import with_token
            from gpujobs.cli.app import _cancel_on_signals
            from gpujobs.cli.sinks import ConsoleSink
            from gpujobs.errors import SpecError
            from gpujobs.spec import load_spec

            spec, _token = with_token(load_spec(spec_file, defaults={"dev": {}}))
            if spec.dev is None or spec.workload is not None:
                raise SpecError(f"{spec_file}: a dev session runs JupyterLab: remove `workload:`")
            controller = controllers()
            controller.preflight(spec, source=str(spec_file))
            record, lock = controller.submit(spec, spec_file, runs_dir)
            console = Console(stderr=True, highlight=False)
            console.print(f"[bold]{record.id}[/]  (Ctrl-C ends the session; notebooks come home)")
            cancel = CancelToken()
            _cancel_on_signals(cancel)
            final = controller.drive(record.id, spec, lock, cancel, ConsoleSink(console))
            if final.state.value == "FAILED":
                sys.stderr.write(f"error: {final.id} failed: {final.error or 'unknown error'}\n")
                raise typer.Exit(1)
            sys.stderr.write(f"{final.id} ended; notebooks and outputs in {final.runs_dir}\n")
