"""The `gpujobs` command. Thin: parse, call one function of the core, render (rich on stderr, or
--json on stdout).

Start-up is kept fast: only typer and the standard library load here; each command imports what
it needs. Help is click's plain formatter (rich_markup_mode=None), which halves `--help` time.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from gpujobs import __version__
from gpujobs.cli import output
from gpujobs.errors import EXIT_JOB_FAILED, GpuJobsError

if TYPE_CHECKING:
    from gpujobs.api import CancelToken, Controller, DriverLock
    from gpujobs.spec import JobSpec
    from gpujobs.state import JobRecord

ControllerFactory = Callable[[], "Controller"]


@dataclass
class _Settings:
    debug: bool = False


def default_controller() -> Controller:
    """This machine's controller; gpujobs.api loads only when a command runs, not for --help."""
    from gpujobs.api import default_controller as made_here

    return made_here()


def create_app(controller_factory: ControllerFactory = default_controller) -> typer.Typer:
    """The CLI, built around its one dependency so tests can hand in their own."""
    app = typer.Typer(
        name="gpujobs",
        help="Run PyTorch training jobs on the cheapest GPU you may get, within budget.",
        rich_markup_mode=None,
        pretty_exceptions_enable=False,  # tracebacks only with --debug, and never with locals
        add_completion=False,
        no_args_is_help=True,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    settings = _Settings()

    @contextlib.contextmanager
    def errors_to_exit() -> Iterator[None]:
        """The one error handler: a GpuJobsError is one line on stderr and its exit code."""
        try:
            yield
        except (typer.Exit, typer.Abort):
            raise
        except Exception as exc:
            if settings.debug:
                raise
            raise typer.Exit(output.report_failure(exc)) from None

    @app.callback()
    def root(
        debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
        version: Annotated[
            bool,
            typer.Option(
                "--version",
                help="Print the version and exit.",
                is_eager=True,
                callback=_print_version,
            ),
        ] = False,
    ) -> None:
        """Run PyTorch training jobs on the cheapest GPU you may get, within budget."""
        settings.debug = debug or os.environ.get("GPUJOBS_DEBUG") == "1"

    @app.command()
    def launch(
        spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="The job spec (YAML).")],
        detach: Annotated[
            bool, typer.Option("--detach", "-d", help="Return at once; the job runs on.")
        ] = False,
        runs_dir: Annotated[
            Path, typer.Option(help="Where checkpoints come home: RUNS_DIR/<job id>/.")
        ] = Path("runs"),
        resume_from: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option(
                "--resume-from",
                metavar="JOB",
                help="Start from a finished or cancelled job's checkpoints (with this spec's "
                "args, e.g. more epochs).",
            ),
        ] = None,
    ) -> None:
        """Launch a job: plan, provision, sync, run, follow its log, bring checkpoints home,
        tear down. Ctrl-C cancels cleanly (the checkpoint still comes home)."""
        with errors_to_exit():
            from gpujobs.spec import load_spec

            spec = load_spec(spec_file)
            controller = controller_factory()
            spec = controller.with_session_token(spec)
            controller.preflight(spec, source=str(spec_file))
            # After the checks: a spec that cannot launch gets its one error line, nothing more.
            _warn_notes(spec)
            record, lock = controller.submit(spec, spec_file, runs_dir, resume_from=resume_from)
            if detach:
                pid = controller.spawn_detached(record.id, spec, lock)
                typer.echo(record.id)
                output.info(
                    f"detached (driver pid {pid}); follow with: gpujobs logs -f {record.id}"
                )
                return
            final = _drive_in_foreground(controller, record.id, spec, lock)
            raise typer.Exit(_report(final))

    @app.command(name="_drive", hidden=True)
    def drive_detached(job_id: str, lock_fd: Annotated[int, typer.Option("--lock-fd")]) -> None:
        """Internal: the detached driver of `launch --detach` (spec JSON on stdin)."""
        from gpujobs.api import CancelToken
        from gpujobs.cli.sinks import PlainSink
        from gpujobs.spec import JobSpec

        spec = JobSpec.model_validate_json(sys.stdin.read())
        cancel = CancelToken()
        _cancel_on_signals(cancel)
        controller_factory().drive_as_detached_child(
            job_id, spec, lock_fd, cancel, PlainSink(sys.stdout)
        )

    @app.command()
    def status(
        job: Annotated[Optional[str], typer.Argument(help="A job id, id prefix or name.")] = None,  # noqa: UP045
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        show_all: Annotated[
            bool, typer.Option("--all", "-a", help="Every job, a page at a time.")
        ] = False,
        page: Annotated[
            int, typer.Option("--page", min=1, help="With --all: which page (newest first).")
        ] = 1,
    ) -> None:
        """Show jobs (active ones and the most recent), or one job in detail."""
        with errors_to_exit():
            from gpujobs.cli.status_command import show_status

            show_status(controller_factory(), job, as_json=as_json, show_all=show_all, page=page)

    @app.command()
    def logs(
        job: Annotated[str, typer.Argument(help="A job id, id prefix or name.")],
        follow: Annotated[
            bool, typer.Option("--follow", "-f", help="Keep printing until the job ends.")
        ] = False,
        node: Annotated[
            int, typer.Option("--node", min=0, help="A multi-node job's node (its rank).")
        ] = 0,
    ) -> None:
        """Print a job's log (it is kept after the job ends); node 0's unless --node."""
        with errors_to_exit():
            controller = controller_factory()
            record = controller.find(job)
            out = sys.stdout.buffer
            with contextlib.suppress(KeyboardInterrupt):
                for chunk in controller.follow_log(record.id, follow=follow, node=node):
                    out.write(chunk)
                    out.flush()
            if follow and controller.driver_lost(record.id):
                output.info(
                    f"the driver of {record.id} is gone; `gpujobs attach {record.id}` follows "
                    f"it again to the end, `gpujobs down {record.id}` saves its checkpoint and "
                    "tears it down"
                )

    @app.command()
    def results(
        job: Annotated[str, typer.Argument(help="A job id, id prefix or name.")],
        as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    ) -> None:
        """Print a job's run summary and the paths of its pictures (opens nothing)."""
        with errors_to_exit():
            from gpujobs.api import read_results
            from gpujobs.cli import results_view

            record = controller_factory().find(job)
            found = read_results(record.id, Path(record.runs_dir))
            if as_json:
                output.print_json(results_view.results_json(found))
            else:
                typer.echo(results_view.results_text(found))

    @app.command()
    def down(job: Annotated[str, typer.Argument(help="A job id, id prefix or name.")]) -> None:
        """Cancel a job and tear down everything it started; brings its checkpoint home first.
        Works on jobs whose gpujobs process died."""
        with errors_to_exit():
            controller = controller_factory()
            record, what = controller.down(job)
            output.info(f"{record.id}: {record.state.value}: {what}")

    @app.command()
    def attach(job: Annotated[str, typer.Argument(help="A job id, id prefix or name.")]) -> None:
        """Adopt a job whose gpujobs process died (kill -9, a closed laptop): follow its log
        from where it stopped, keep pulling checkpoints, tear down at the end."""
        with errors_to_exit():
            from gpujobs.api import CancelToken
            from gpujobs.cli.sinks import ConsoleSink

            controller = controller_factory()
            console = output.console()
            console.print(f"[bold]{job}[/]  (Ctrl-C cancels; the checkpoint still comes home)")
            cancel = CancelToken()
            _cancel_on_signals(cancel)
            final = controller.attach(job, cancel, ConsoleSink(console))
            raise typer.Exit(_report(final))

    @app.command()
    def gpus(
        gpu: Annotated[Optional[str], typer.Option(help="Only this GPU, e.g. T4.")] = None,  # noqa: UP045
        provider: Annotated[
            Optional[list[str]],  # noqa: UP045
            typer.Option("--provider", "-p", help="Only this provider (repeatable)."),
        ] = None,
        region: Annotated[Optional[str], typer.Option(help="Only this region.")] = None,  # noqa: UP045
        as_json: Annotated[bool, typer.Option("--json", help="Every offer, as JSON.")] = False,
    ) -> None:
        """List the GPU machines of the clouds' catalogs, cheapest first (no account needed)."""
        with errors_to_exit():
            from gpujobs.cli import clouds_view

            controller = controller_factory()
            offers, catalogs = controller.gpu_offers(providers=provider, gpu=gpu, region=region)
            if as_json:
                ordered = clouds_view.offers_in_table_order(offers)
                output.print_json(
                    {
                        "offers": [offer.model_dump(mode="json") for offer in ordered],
                        "catalogs": [info.__dict__ for info in catalogs],
                    }
                )
                return
            rows = clouds_view.gpu_rows(offers)
            output.console(stdout=True).print(clouds_view.gpus_table(rows, catalogs))

    @app.command()
    def plan(
        spec_file: Annotated[Path, typer.Argument(metavar="SPEC", help="The job spec (YAML).")],
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        show_all: Annotated[
            bool, typer.Option("--all", "-a", help="Every placement and every dropped offer.")
        ] = False,
    ) -> None:
        """Show where a spec would run: placements in the order a launch tries them, and why
        every other offer was dropped (resources, region, spot, budget, quota). Starts nothing."""
        with errors_to_exit():
            from gpujobs.cli import clouds_view
            from gpujobs.spec import load_spec

            spec = load_spec(spec_file)
            notes = _warn_notes(spec)
            controller = controller_factory()
            result = controller.plan(spec)
            hours = spec.budget.max_hours
            size = controller.dataset_size(spec) if spec.dataset is not None else None
            first = result.placements[0].offer.provider if result.placements else None
            egress = controller.egress_estimate(size, first) if size and first else None
            if as_json:
                data = clouds_view.plan_json(result, hours)
                if size is not None:
                    data["dataset"] = clouds_view.dataset_json(size, egress)
                if notes:
                    data["warnings"] = notes
                output.print_json(data)
                return
            console = output.console(stdout=True)
            for table in clouds_view.plan_tables(result, hours, limit=None if show_all else 10):
                console.print(table)
            for line in clouds_view.dataset_lines(size, egress, spec.resources.disk_gb):
                output.info(line)
            if not result.placements:
                output.error(f"no placement fits {spec_file}: {controller.refusal(spec, result)}")
                raise typer.Exit(2)

    @app.command()
    def check(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Which providers have credentials, and what is missing for the others. Calls no API."""
        with errors_to_exit():
            from gpujobs.cli import clouds_view

            found = controller_factory().check()
            if as_json:
                output.print_json([item.model_dump(mode="json") for item in found])
                return
            output.console(stdout=True).print(clouds_view.check_table(found))

    @app.command()
    def quota(
        provider: Annotated[
            Optional[str], typer.Option("--provider", "-p", help="Only this provider.")  # noqa: UP045
        ] = None,
        gpu: Annotated[Optional[str], typer.Option(help="Only quotas for this GPU.")] = None,  # noqa: UP045
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """GPU quotas per provider and region: limit, in use and free in the provider's own
        unit, the quota code, and where to request more."""
        with errors_to_exit():
            from gpujobs.cli import clouds_view

            report = controller_factory().quota(provider, gpu)
            if as_json:
                output.print_json(clouds_view.quota_json(report))
                return
            output.console(stdout=True).print(clouds_view.quota_table(report))

    budget_app = typer.Typer(
        help="What was spent, per job, provider and month, and what your budgets leave.",
        rich_markup_mode=None,
        no_args_is_help=False,
    )
    app.add_typer(budget_app, name="budget")

    @budget_app.callback(invoke_without_command=True)
    def budget(
        ctx: typer.Context,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        show_all: Annotated[bool, typer.Option("--all", "-a", help="Every job.")] = False,
    ) -> None:
        """Your budgets (limit, spent, held by running jobs, free; the burn rate and when the
        money runs out at it), spend per job, per provider and month, and per day."""
        if ctx.invoked_subcommand is not None:
            return
        with errors_to_exit():
            from gpujobs.cli.budget_view import show_budget

            show_budget(controller_factory(), as_json=as_json, show_all=show_all)

    @budget_app.command("set")
    def budget_set(
        amount: Annotated[float, typer.Argument(help="The limit in USD, e.g. 300.")],
        provider: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--provider", "-p", help="Only this provider's spend counts."),
        ] = None,
        month: Annotated[
            bool, typer.Option("--month", help="Per calendar month (UTC), not all time.")
        ] = False,
    ) -> None:
        """Set a budget no launch may exceed: a job whose worst case does not fit in what is
        left is refused, and a running job is stopped at it."""
        with errors_to_exit():
            controller = controller_factory()
            controller.set_budget(amount, provider=provider, monthly=month)
            output.info(
                f"budget set: ${amount:,.2f} {'a month' if month else 'in all'} for "
                f"{provider or 'all providers'}; `gpujobs budget` shows what is left"
            )

    @budget_app.command("unset")
    def budget_unset(
        provider: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option("--provider", "-p", help="The provider's budget."),
        ] = None,
        month: Annotated[bool, typer.Option("--month", help="The monthly budget.")] = False,
    ) -> None:
        """Remove a budget."""
        with errors_to_exit():
            controller_factory().remove_budget(provider=provider, monthly=month)
            output.info("budget removed")

    image_app = typer.Typer(
        help="The workload image: build it here, push it to your registry.",
        rich_markup_mode=None,
        no_args_is_help=True,
    )
    app.add_typer(image_app, name="image")

    @image_app.command("build")
    def image_build(
        base: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option(help="The base image (default: the official CUDA PyTorch runtime)."),
        ] = None,
        wheels: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option(help="A folder of wheels inside the base to install from, offline."),
        ] = None,
        tag: Annotated[
            Optional[str],  # noqa: UP045
            typer.Option(help="Also tag it so (default: its content tag only)."),
        ] = None,
    ) -> None:
        """Build the workload image (docker/Dockerfile and the bundled workloads) with this
        machine's docker, tagged by its content as a node would tag it."""
        with errors_to_exit():
            built = controller_factory().build_image(base=base, wheels=wheels, tag=tag,
                                                     on_line=output.info)  # fmt: skip
            typer.echo(built)
            output.info(f"built {built}; `gpujobs image push REPO` puts it in your registry")

    @image_app.command("push")
    def image_push(
        reference: Annotated[
            str, typer.Argument(metavar="REPO[:TAG]", help="e.g. ghcr.io/me/gpujobs")
        ],
    ) -> None:
        """Push the workload image built here to your registry (log in with `docker login`
        first); then name it as `image:` in your specs."""
        with errors_to_exit():
            pushed = controller_factory().push_image(reference, on_line=output.info)
            typer.echo(pushed)
            output.info(f"pushed; in a spec: image: {pushed}")

    @app.command()
    def ui(
        port: Annotated[
            int, typer.Option("--port", min=0, max=65535, help="Port on 127.0.0.1 (0: any free).")
        ] = 0,
        no_open: Annotated[
            bool, typer.Option("--no-open", help="Print the URL only; open no browser.")
        ] = False,
    ) -> None:
        """A local web dashboard: jobs, live logs, metric curves, pictures, budget, stop."""
        with errors_to_exit():
            from gpujobs.cli.dashboard.server import Dashboard

            try:
                dashboard = Dashboard(controller_factory, port)
            except OSError as exc:
                raise GpuJobsError(f"cannot listen on 127.0.0.1:{port}: {exc.strerror}") from None
            output.info(f"gpujobs ui: {dashboard.url}")
            output.info("  127.0.0.1 only; the token in the URL is the key. Ctrl-C stops it.")
            if not no_open:
                import webbrowser

                webbrowser.open(dashboard.url)
            with contextlib.suppress(KeyboardInterrupt):
                dashboard.serve_forever()
            dashboard.close()

    @app.command()
    def doctor(
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    ) -> None:
        """Check the job store; rebuild a damaged one from every row it can still read."""
        with errors_to_exit():
            from gpujobs.api.maintenance import doctor as run_doctor

            report = run_doctor()
            if as_json:
                output.print_json(
                    {
                        "store": str(report.path),
                        "healthy": report.healthy,
                        "problem": report.problem,
                        "moved_to": str(report.moved_to) if report.moved_to else None,
                        "kept": report.kept,
                        "unreadable": report.lost,
                    }
                )
            elif report.healthy:
                output.info(f"{report.path}: ok")
            else:
                kept = ", ".join(f"{count} {table}" for table, count in report.kept.items())
                lost = sum(report.lost.values())
                output.info(f"{report.path} was damaged: {report.problem}")
                output.info(f"  the damaged file is kept as {report.moved_to}")
                output.info(f"  rebuilt with every row that could be read: {kept}")
                if lost:
                    output.info(f"  {lost} unreadable range(s) of rows were left behind")

    @app.command()
    def gc(
        yes: Annotated[bool, typer.Option("--yes", "-y", help="Delete without asking.")] = False,
        as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
        include_unknown: Annotated[
            bool,
            typer.Option(
                "--include-unknown",
                help="Also delete what belongs to jobs this machine does not know (launched "
                "from another machine or GPUJOBS_HOME, or whose state was lost).",
            ),
        ] = False,
        cache_days: Annotated[
            float,
            typer.Option(
                "--cache-days",
                min=0,
                help="With --yes, also remove fetched datasets no job on this machine used "
                "for this many days (the node-side dataset cache).",
            ),
        ] = 14,
    ) -> None:
        """Find what gpujobs tagged on aws, gcp, paperspace and this machine that no live job
        owns (left by a crash or a failed teardown), with its age and cost so far, and delete
        it once you confirm. Jobs whose driver is lost are listed, not deleted: `gpujobs down
        JOB` brings their checkpoint home first. ssh hosts are not swept. Datasets fetched
        from buckets and URLs are kept for the next job; those unused for --cache-days go."""
        with errors_to_exit():
            from gpujobs.cli import gc_view

            controller = controller_factory()
            report = controller.gc_report()
            for line in gc_view.problem_lines(report):
                output.info(line)
            if not as_json:
                output.console(stdout=True).print(gc_view.plan_view(report))
            doomed = controller.gc_doomed(report, include_unknown=include_unknown)
            if len(doomed) < len(report.orphans):
                output.info(
                    f"{len(report.orphans) - len(doomed)} resource(s) of jobs unknown here are "
                    "kept: --include-unknown deletes them too"
                )
            delete = yes and bool(doomed)
            if doomed and not yes:
                if not as_json and sys.stdin.isatty():
                    delete = typer.confirm(
                        f"Delete these {len(doomed)} resource(s)?", default=False, err=True
                    )
                    if not delete:
                        output.info("nothing deleted")
                else:
                    output.info("run gpujobs gc --yes to delete them")
            results = controller.gc_sweep(doomed) if delete else []
            cache = controller.dataset_cache()
            pruned = controller.prune_dataset_cache(cache, days=cache_days) if yes else []
            if as_json:
                data = gc_view.gc_json(report, results if yes else None)
                data["dataset_cache"] = gc_view.cache_json(cache, pruned)
                output.print_json(data)
            else:
                for line in gc_view.sweep_lines(results):
                    output.info(line)
                for line in gc_view.cache_lines(cache, pruned, cache_days):
                    output.info(line)
            if any(not result.deleted for result in results):
                raise typer.Exit(EXIT_JOB_FAILED)

    from gpujobs.cli import live_view

    live_view.register_ssh(app, controller_factory, errors_to_exit)
    live_view.register_ssh_config(app, controller_factory, errors_to_exit)
    live_view.register_forward(app, controller_factory, errors_to_exit)
    live_view.register_dev(app, controller_factory, errors_to_exit)

    @app.command()
    def schema() -> None:
        """Print the JSON Schema of job specs (for editor autocompletion)."""
        from gpujobs.spec import json_schema

        output.print_json(json_schema())

    return app


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"gpujobs {__version__}")
        raise typer.Exit()


def _drive_in_foreground(
    controller: Controller, job_id: str, spec: JobSpec, lock: DriverLock
) -> JobRecord:
    from gpujobs.api import CancelToken
    from gpujobs.cli.sinks import ConsoleSink

    console = output.console()
    console.print(f"[bold]{job_id}[/]  (Ctrl-C cancels; the checkpoint still comes home)")
    cancel = CancelToken()
    _cancel_on_signals(cancel)
    return controller.drive(job_id, spec, lock, cancel, ConsoleSink(console))


def _report(final: JobRecord) -> int:
    from gpujobs.errors import EXIT_CANCELLED
    from gpujobs.state import JobState

    if final.state is JobState.SUCCEEDED:
        output.info(f"{final.id} succeeded; checkpoints in {final.runs_dir}")
        return 0
    if final.state is JobState.CANCELLED:
        output.info(f"{final.id} cancelled; what was saved is in {final.runs_dir}")
        return EXIT_CANCELLED
    output.error(f"{final.id} failed: {final.error or 'unknown error'}")
    return EXIT_JOB_FAILED


def _cancel_on_signals(cancel: CancelToken) -> None:
    """Ctrl-C, SIGTERM (`gpujobs down`, a shutdown) and a closed terminal all cancel the job.

    The handler only sets a flag: nothing is raised into the middle of a provider call or a
    teardown, and a second signal skips the wait for the graceful checkpoint.
    """
    import signal

    def handle(signum: int, _frame: object) -> None:
        cancel.cancel(f"cancelled by {signal.Signals(signum).name}")

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, handle)


def _warn_notes(spec: JobSpec) -> list[str]:
    """The workload's advice on the spec's args (transfer without weights trains from
    scratch), one `warning:` line each on stderr, before anything is provisioned; returned
    for --json."""
    notes = spec.workload_notes()
    for note in notes:
        sys.stderr.write(f"warning: {note}\n")
    return notes


def main() -> None:
    create_app()(prog_name="gpujobs")
