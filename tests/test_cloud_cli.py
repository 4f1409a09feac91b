"""The clouds' read commands: gpus, plan, check, quota (real CLI; AWS on moto in-process)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto import mock_aws
from typer.testing import CliRunner

from gpujobs.api.controller import Controller
from gpujobs.cli.app import create_app
from gpujobs.paths import HomeLayout
from gpujobs.providers.aws import AwsProvider
from gpujobs.providers.local import LocalProvider
from gpujobs.state import Store
from gpujobs.testing.aws import AwsFakes
from tests.conftest import gpujobs_cli, write_spec


def test_gpus_lists_the_catalog_cheapest_first_with_its_dates() -> None:
    done = gpujobs_cli("gpus", "--gpu", "t4", "--json")
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    offers = listing["offers"]
    assert offers and {offer["gpu"] for offer in offers} == {"T4"}
    assert {offer["provider"] for offer in offers} >= {"aws", "gcp"}
    assert all(info["as_of"] and info["source"] for info in listing["catalogs"])
    table = gpujobs_cli("gpus", "--gpu", "T4", "--provider", "aws")
    lines = [line for line in table.stdout.splitlines() if line.startswith("aws")]
    prices = [float(line.split("$")[1].split()[0]) for line in lines]
    assert prices == sorted(prices) and "g4dn.xlarge" in lines[0]


def test_gpus_refuses_an_unknown_gpu_naming_the_known_ones() -> None:
    done = gpujobs_cli("gpus", "--gpu", "T5")
    assert done.returncode == 2
    assert "--gpu T5: no such GPU" in done.stderr and "A100" in done.stderr
    assert "Traceback" not in done.stderr


def test_plan_shows_the_placement_and_starts_nothing(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: p\ncommand: 'true'\nbudget: {max_hours: 1}\n")
    done = gpujobs_cli("plan", str(spec), "--json")
    assert done.returncode == 0, done.stderr
    [placement] = json.loads(done.stdout)["placements"]
    assert placement["label"] == "local/this-machine" and placement["worst_case_usd"] == 0
    assert json.loads(gpujobs_cli("status", "--json").stdout) == [], "nothing was started"


def test_plan_without_cloud_credentials_says_what_to_set(tmp_path: Path) -> None:
    spec = write_spec(
        tmp_path, "name: p\ncommand: 'true'\nproviders: [aws, paperspace]\nresources: {gpu: T4}\n"
    )
    done = gpujobs_cli("plan", str(spec))
    assert done.returncode == 2
    assert "aws configure" in done.stdout and "PAPERSPACE_API_KEY" in done.stdout
    assert "no placement fits" in done.stderr


def test_check_names_what_is_missing() -> None:
    done = gpujobs_cli("check", "--json")
    assert done.returncode == 0, done.stderr
    found = {item["provider"]: item for item in json.loads(done.stdout)}
    assert found["local"]["ok"]
    assert not found["aws"]["ok"] and "aws configure" in found["aws"]["missing"]
    assert not found["paperspace"]["ok"] and "PAPERSPACE_API_KEY" in found["paperspace"]["missing"]


@pytest.fixture
def aws_cli(tmp_path: Path) -> Iterator[tuple[CliRunner, object, AwsFakes]]:
    with mock_aws():
        fakes = AwsFakes(applied_quotas={("us-east-1", "L-DB2E81BA"): 16}, default_quota=0)
        home = HomeLayout(tmp_path / "cli-home").ensure()
        store = Store(home.state_db)
        providers = {
            "local": LocalProvider(home.work),
            "aws": AwsProvider(session_factory=fakes.session, caller_address=lambda: "1.2.3.4"),
        }
        app = create_app(lambda: Controller(home, store, lambda: providers))
        yield CliRunner(), app, fakes
        store.close()


def test_quota_reports_limits_in_vcpus_with_codes_and_where_to_ask(aws_cli) -> None:
    runner, app, _ = aws_cli
    done = runner.invoke(app, ["quota", "--provider", "aws", "--gpu", "T4", "--json"])
    assert done.exit_code == 0, done.output
    report = json.loads(done.stdout)
    assert report["report"] == "quota" and report["as_of"].endswith("Z")
    rows = report["limits"]
    east = {q["code"]: q for q in rows if q["region"] == "us-east-1"}
    assert east["L-DB2E81BA"]["limit"] == 16 and east["L-DB2E81BA"]["free"] == 16
    assert east["L-3819A6DF"]["limit"] == 0, "AWS's default where none was applied"
    assert "L-417A185B" not in east, "P instances carry no T4"
    assert all(q["unit"] == "vCPUs" and "servicequotas" in q["request_at"] for q in rows)
    table = runner.invoke(app, ["quota", "--provider", "aws", "--gpu", "T4"])
    assert "L-DB2E81BA" in table.stdout and "us-east-1" in table.stdout


def test_quota_for_an_unknown_provider_is_bad_input(aws_cli) -> None:
    runner, app, _ = aws_cli
    done = runner.invoke(app, ["quota", "--provider", "azure"])
    assert done.exit_code == 2 and "no quota report for it" in done.stderr
