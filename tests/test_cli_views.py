"""What the read commands draw at a real terminal's width, and the order their --json keeps."""

from __future__ import annotations

import json
import os

from rich.console import Console

from gpujobs.api.controller import JobView
from gpujobs.cli.jobs_view import status_table
from gpujobs.state import JobRecord, JobState
from tests.conftest import gpujobs_cli


def record(job_id: str, state: JobState) -> JobRecord:
    return JobRecord(
        id=job_id,
        name=job_id.rsplit("-", 1)[0],
        state=state,
        spec_json="{}",
        spec_path="/home/student/projects/covers/spec.yaml",
        runs_dir=f"/home/student/projects/album-covers/runs/{job_id}",
        created_at=1_000.0,
        updated_at=1_100.0,
        finished_at=None,
        placement="aws/us-east-1b/spot g4dn.xlarge",
        exit_code=None,
        error=None,
        driver_pid=None,
        driver_lost=state is JobState.RUNNING,
        cap_usd=20.0,
        cap_hours=6.0,
    )


def drawn(width: int, views: list[JobView]) -> str:
    console = Console(width=width, record=True, color_system=None)
    console.print(status_table(views, len(views), {v.record.id: 1.25 for v in views}, 4_000.0,
                               width=width))  # fmt: skip
    return console.export_text()


def test_status_at_80_columns_keeps_every_id_and_state_whole() -> None:
    views = [
        JobView(record("album-covers-dcgan-3f9a2c", JobState.RUNNING), driver_alive=False),
        JobView(record("vgg19-transfer-learning-flowers-a1b2c3", JobState.SUCCEEDED), True),
        JobView(record("fake-news-lstm-0d0d0d", JobState.RECOVERING), True),
    ]
    for width in (80, 100, 200):
        text = drawn(width, views)
        assert all(len(line) <= width for line in text.splitlines()), text
        for view in views:
            lines = [line for line in text.splitlines() if view.record.id in line]
            assert len(lines) == 1, f"{view.record.id} is cut or folded at {width}:\n{text}"
        assert "RUNNING (driver lost)" in text and "SUCCEEDED" in text and "RECOVERING" in text
    wide = drawn(200, views)
    assert "CHECKPOINTS" in wide and "PLACEMENT" in wide, "a wide terminal shows every column"
    assert "CHECKPOINTS" not in drawn(80, views), "the long path gives way first"


def test_gpus_json_lists_offers_in_the_tables_order() -> None:
    listing = json.loads(gpujobs_cli("gpus", "--gpu", "T4", "--json").stdout)["offers"]
    table = gpujobs_cli("gpus", "--gpu", "T4", env={**os.environ, "COLUMNS": "200"}).stdout
    table_rows = [
        (line.split()[1], int(line.split()[2].rstrip("x")))
        for line in table.splitlines()[1:]
        if line[:3] in ("aws", "gcp", "pap")
    ]
    json_rows: list[tuple[str, int]] = []
    for offer in listing:
        if not json_rows or json_rows[-1] != (offer["instance_type"], offer["gpus"]):
            json_rows.append((offer["instance_type"], offer["gpus"]))
    assert len(table_rows) > 10
    assert json_rows == table_rows, "each table row's offers together, in the table's order"
    for kind, gpus in table_rows:  # within a row: on-demand before spot, cheapest first
        row = [
            (o["spot"], o["price_per_hour"])
            for o in listing
            if (o["instance_type"], o["gpus"]) == (kind, gpus)
        ]
        assert row == sorted(row)


def test_quota_without_credentials_is_left_aligned_lines_at_80_columns() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "PAPER"))}
    done = gpujobs_cli("quota", env={**env, "COLUMNS": "80", "HOME": os.environ["GPUJOBS_HOME"]})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    for provider in ("aws", "gcp", "paperspace"):
        assert any(line.startswith(f"{provider}: no credentials") for line in lines), done.stdout
    assert all(len(line) <= 80 and line == line.lstrip() for line in lines), done.stdout
