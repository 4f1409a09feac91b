from __future__ import annotations

import json
from pathlib import Path

import pytest

from gpujobs.errors import SpecError
from gpujobs.spec import REDACTED, json_schema, load_spec
from gpujobs.workloads import bundled_workloads
from tests.conftest import REPO, write_spec

TEMPLATES = sorted((REPO / "templates").glob("*.yaml"))


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_every_template_loads(template: Path) -> None:
    spec = load_spec(template)
    assert spec.providers


def test_a_full_spec_loads_with_defaults_and_resolved_dataset(tmp_path: Path) -> None:
    (tmp_path / "data" / "covers").mkdir(parents=True)
    spec = load_spec(
        write_spec(
            tmp_path,
            """
            name: album-covers
            workload: mnist_cnn
            args: {epochs: 25, amp: true, augment: false}
            resources: {gpu: t4}
            budget: {max_usd: 20, max_hours: 6}
            dataset: {source: ./data/covers}
            env: {WANDB_MODE: offline, SEED: 3}
            """,
        )
    )
    assert spec.resources.gpu == "T4" and spec.resources.gpu_count == 1
    assert spec.dataset is not None
    assert spec.dataset.source == str(tmp_path / "data" / "covers")
    assert spec.dataset.target == "/data"
    assert spec.checkpoints.keep == 3
    assert spec.workload_flags() == ["--epochs", "25", "--amp"]
    assert spec.env == {"WANDB_MODE": "offline", "SEED": "3"}


def test_name_defaults_to_the_file_name(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, "command: 'true'\n", name="My_Run.yaml"))
    assert spec.name == "my-run"


def error_of(tmp_path: Path, text: str) -> str:
    path = write_spec(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message, "an error is one line"
    assert message.startswith(str(path)), "an error names the file"
    return message.removeprefix(str(path))


def test_wrong_type_names_line_field_and_what_is_allowed(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\ncommand: 'true'\nnodes: two\n")
    assert message.startswith(":3: nodes: ")
    assert "'two'" in message and "1 to 64" in message


def test_unknown_field_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\ncommand: 'true'\nresources:\n  gpus: 1\n  vram: 16\n")
    assert message.startswith(":5: resources.vram: unknown field")
    assert "gpu, gpus, cpus, memory_gb, disk_gb" in message


def test_missing_entry_point(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\n")
    assert "give exactly one of `workload:`" in message and "mnist_cnn" in message


def test_unknown_workload_lists_the_bundled_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\nworkload: mnist\n")
    assert message.startswith(":2: workload: unknown workload 'mnist'; bundled: ")
    assert "mnist_cnn" in message


def test_unknown_provider_lists_the_allowed_ones(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\ncommand: 'true'\nproviders: [local, azure]\n")
    assert message.startswith(":3: providers.1: ") and "'local'" in message


def test_bad_yaml_points_at_line_and_column(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\nargs: {epochs: 3\ncommand: x\n")
    assert message.startswith(":3:") and "bad YAML" in message


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\ncommand: 'true'\nname: b\n")
    assert message == ":3: name: given twice; keep one"


def test_not_a_mapping(tmp_path: Path) -> None:
    assert "a job spec is a YAML mapping" in error_of(tmp_path, "- a\n- b\n")


def test_dataset_that_does_not_exist(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\ncommand: 'true'\ndataset:\n  source: ./nope\n")
    assert message.startswith(":4: dataset.source: ") and "is not a directory" in message


def test_fetched_dataset_sources_load_and_bad_ones_say_what_is_expected(tmp_path: Path) -> None:
    (tmp_path / "extra").mkdir()
    path = write_spec(
        tmp_path,
        "name: a\ncommand: 'true'\ndataset:\n  source: [s3://lab-data/mnist, "
        "'hf://datasets/org/name@v1', kaggle://competitions/titanic, ./extra]\n"
        "  endpoint_url: https://minio.lab:9000\n",
    )
    dataset = load_spec(path).dataset
    assert dataset is not None
    assert dataset.fetched_sources == [
        "s3://lab-data/mnist",
        "hf://datasets/org/name@v1",
        "kaggle://competitions/titanic",
    ]
    assert dataset.local_source == str(tmp_path / "extra")
    message = error_of(tmp_path, "name: a\ncommand: 'true'\ndataset: {source: 'ftp://b/k'}\n")
    assert message.startswith(":3: dataset.source: ") and "s3://bucket/prefix" in message
    message = error_of(tmp_path, "name: a\ncommand: 'true'\ndataset: {source: [./a, ./b]}\n")
    assert "at most one local directory" in message
    message = error_of(
        tmp_path, "name: a\ncommand: 'true'\ndataset: {source: 'https://x/a.zip', sha256: nope}\n"
    )
    assert "dataset.sha256" in message


def test_reserved_args_are_refused(tmp_path: Path) -> None:
    message = error_of(tmp_path, "name: a\nworkload: mnist_cnn\nargs: {out: /x}\n")
    assert "set by gpujobs" in message


def test_bad_name(tmp_path: Path) -> None:
    assert "lowercase letters" in error_of(tmp_path, "name: My Job\ncommand: 'true'\n")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file"):
        load_spec(tmp_path / "absent.yaml")


def test_redacted_hides_env_values(tmp_path: Path) -> None:
    spec = load_spec(write_spec(tmp_path, "command: 'true'\nenv: {WANDB_API_KEY: s3cr3t}\n"))
    stored = spec.redacted().model_dump_json()
    assert "s3cr3t" not in stored and REDACTED in stored


def test_schema_describes_the_spec() -> None:
    schema = json_schema()
    json.dumps(schema)
    assert {"name", "workload", "resources", "budget", "checkpoints"} <= set(schema["properties"])


@pytest.mark.parametrize("workload", bundled_workloads())
def test_every_bundled_workload_has_a_local_template(workload: str) -> None:
    # mnist_cnn's is the first job of a new machine, named short for the README's first command.
    name = "mnist" if workload == "mnist_cnn" else workload
    spec = load_spec(REPO / "templates" / f"{name}-local.yaml")
    assert spec.workload == workload and spec.providers == ["local"]
