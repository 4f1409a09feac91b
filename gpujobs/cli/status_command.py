"""`gpujobs status`: the jobs table (active ones and the most recent, or `--all` a page at a
time), one job in detail, or either as --json. Shared by the typer command and the quick path
of cli/entry.py, which runs it without loading typer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from gpujobs.cli import output

if TYPE_CHECKING:
    from gpujobs.api import Controller


def show_status(
    controller: Controller, job: str | None, *, as_json: bool, show_all: bool, page: int
) -> None:
    from gpujobs.cli import jobs_view as render

    if job is not None:
        detail = controller.detail(job)
        if as_json:
            output.print_json(render.job_detail_json(detail))
        else:
            output.console(stdout=True).print(render.job_detail(detail))
        return
    views, total = controller.overview(show_all=show_all, page=page)
    costs = controller.costs([view.record.id for view in views])
    hint = render.more_jobs_hint(len(views), total, show_all=show_all, page=page)
    if as_json:
        output.print_json([render.job_json(view, costs) for view in views])
        if hint:
            output.info(hint)  # stderr: the JSON stays one list
    elif not views:
        output.info(hint or "no jobs yet: gpujobs launch templates/mnist-local.yaml")
    else:
        console = output.console(stdout=True)
        now = controller.clock.now()
        table = render.status_table(views, total, costs, now, width=console.width)
        table.caption = hint
        console.print(table)
