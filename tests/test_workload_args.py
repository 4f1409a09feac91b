"""A spec's `args` checked against the bundled workload's own parser at plan time: a misspelled,
mistyped or out-of-range flag is refused in one line before anything is provisioned."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gpujobs.errors import SpecError
from gpujobs.spec import RESERVED_ARGS, load_spec
from gpujobs.workload_args import WorkloadArgError, check_args, workload_arguments
from gpujobs.workloads import bundled_workloads
from tests.conftest import REPO, gpujobs_cli, write_spec

WORKLOADS = bundled_workloads()
TEMPLATES = sorted((REPO / "templates").glob("*.yaml"))


def error_of(tmp_path: Path, workload: str, args: str) -> str:
    """The one line load_spec refuses `args` (YAML flow text) with, less the file name."""
    path = write_spec(tmp_path, f"name: a\nworkload: {workload}\nargs: {args}\n")
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{path}:3: args.")
    return message.removeprefix(f"{path}:3: ")


def accepts(tmp_path: Path, workload: str, args: str) -> list[str]:
    path = write_spec(tmp_path, f"name: a\nworkload: {workload}\nargs: {args}\n")
    return load_spec(path).workload_flags()


def parse_with_workload(workload: str, flags: list[str]) -> argparse.Namespace | None:
    """What the workload's own parser makes of `flags` (with the flags gpujobs adds); None if
    it refuses them."""
    parser = importlib.import_module(f"jobs.{workload}.cli").build_parser()
    argv = ["--data", "/data", "--out", "/ckpt", "--resume", *flags]
    with contextlib.redirect_stderr(io.StringIO()), contextlib.suppress(SystemExit):
        return parser.parse_args(argv)
    return None


def test_every_workload_describes_its_flags_without_importing_torch() -> None:
    code = (
        "import json, sys\n"
        "from gpujobs.workload_args import workload_arguments\n"
        f"names = {{w: sorted(workload_arguments(w)) for w in {WORKLOADS!r}}}\n"
        "heavy = sorted({'torch', 'numpy'} & set(sys.modules))\n"
        "print(json.dumps({'names': names, 'heavy': heavy}))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    found = json.loads(done.stdout)
    assert found["heavy"] == []
    assert set(found["names"]) == set(WORKLOADS)
    for workload, names in found["names"].items():
        assert {"epochs", "seed", "amp", "device"} <= set(names), workload
    assert "image_size" in found["names"]["dcgan"]
    assert "class_weights" in found["names"]["mnist_cnn"]


@pytest.mark.parametrize("command", ["plan", "launch"])
def test_a_misspelled_arg_is_one_line_exit_2_and_nothing_is_recorded(
    tmp_path: Path, command: str
) -> None:
    spec = write_spec(tmp_path, "name: a\nworkload: dcgan\nargs:\n  epochs: 1\n  imagesize: 64\n")
    done = gpujobs_cli(command, str(spec))
    assert done.returncode == 2, done.stderr
    assert done.stderr == (
        f"error: {spec}:5: args.imagesize: unknown argument for dcgan; did you mean image_size?\n"
    )
    status = gpujobs_cli("status", "--json")
    assert status.returncode == 0 and json.loads(status.stdout) == []


@pytest.mark.parametrize(
    ("workload", "args", "expected"),
    [
        ("mnist_cnn", "{epochs: ten}", "args.epochs: 'ten' is not an integer; e.g. epochs: 1"),
        ("mnist_cnn", "{epochs: 2.5}", "args.epochs: 2.5 is not an integer; e.g. epochs: 1"),
        ("mnist_cnn", "{lr: fast}", "args.lr: 'fast' is not a number; e.g. lr: 0.01"),
        # The workload's own rules (positive_int, fraction, ...) apply, in its own words.
        ("mnist_cnn", "{epochs: 0}", "args.epochs: must be an integer >= 1, got '0'; e.g."),
        ("mnist_cnn", "{val_fraction: 1.5}", "args.val_fraction: must be a number between 0"),
        ("transfer", "{image_size: 16}", "args.image_size: must be at least 32, got '16'"),
        ("transfer", "{weights_sha256: abc}", "args.weights_sha256: must be 64 hex digits"),
        # No default: the example is one the option's type takes.
        ("mnist_cnn", "{synthetic: lots}", "args.synthetic: 'lots' is not an integer; e.g. "
         "synthetic: 10"),
        ("transfer", "{finetune_lr: x}", "args.finetune_lr: 'x' is not a number; e.g. "
         "finetune_lr: 0.1"),
        # Choices, typed ones among them.
        ("dcgan", "{image_size: 96}", "args.image_size: 96 is not one of 64, 128"),
        ("text_classifier", "{model: cnn}", "args.model: 'cnn' is not one of lstm, bag"),
        ("transfer", "{arch: resnet}", "args.arch: 'resnet' is not one of vgg11, vgg11_bn,"),
        # Switches and values mixed up.
        ("mnist_cnn", "{amp: 1}", "args.amp: 1 is not true or false: amp is a switch (true "
         "passes --amp, false leaves it out)"),
        ("mnist_cnn", "{epochs: true}", "args.epochs: true is a switch value, but epochs takes an "
         "integer; e.g. epochs: 1"),
        ("mnist_cnn", "{init: no}", "args.init: false is a switch value, but init takes one of "
         "kaiming, xavier, orthogonal, torch (YAML reads yes/no/on/off as true/false"),
        # Lists go only to flags that read a comma list.
        ("mnist_cnn", "{lr: [0.1, 0.2]}", "args.lr: [0.1, 0.2] is a list, but lr takes one "
         "value, a number; e.g. lr: 0.01"),
        ("mnist_cnn", "{class_weights: [1, 2]}", "args.class_weights: give 10 non-negative"),
        # What argparse would read as a flag, and what no command line carries.
        ("transfer", "{weights: -x}", "args.weights: '-x' starts with '-', so the workload would "
         "read it as a flag"),
        ("transfer", '{weights: "a\\0b"}', "args.weights: 'a\\x00b' holds a NUL character"),
        # Unknown names: the close one, else every name but those gpujobs sets.
        ("text_classifier", "{hiden: 3}", "args.hiden: unknown argument for text_classifier; did "
         "you mean hidden?"),
        ("latent_walk", "{colour: red}", "args.colour: unknown argument for latent_walk; its "
         "arguments: amp, checkpoint, device, epochs, fps, frame_ms, frames_per_step, "
         "keep_training_pictures, log_every, max_steps, points, seed, size, synthetic_steps, "
         "threads, video"),
        # argparse would expand a prefix; a spec names the flag in full.
        ("dcgan", "{image: 64}", "args.image: unknown argument for dcgan; did you mean "
         "image_size?"),
        ("dcgan", "{image_size: 64, image-size: 128}", "args.image-size: given twice (also as "
         "image_size); keep one"),
    ],
)  # fmt: skip
def test_a_bad_arg_names_the_key_what_is_allowed_and_a_fix(
    tmp_path: Path, workload: str, args: str, expected: str
) -> None:
    assert error_of(tmp_path, workload, args).startswith(expected)


def test_a_long_value_is_shown_short(tmp_path: Path) -> None:
    message = error_of(tmp_path, "transfer", "{weights_sha256: " + "z" * 5000 + "}")
    assert message.startswith("args.weights_sha256: must be 64 hex digits") and len(message) < 400


def test_reserved_flags_are_still_refused_by_their_own_check(tmp_path: Path) -> None:
    path = write_spec(tmp_path, "name: a\nworkload: dcgan\nargs: {checkpoint_every_minutes: 1}\n")
    with pytest.raises(SpecError, match=r":3: args: 'checkpoint_every_minutes' is set by gpujobs"):
        load_spec(path)


def test_flags_gpujobs_sets_are_never_offered_as_a_fix() -> None:
    with pytest.raises(WorkloadArgError) as caught:
        check_args("dcgan", {"keeps": 3}, reserved=RESERVED_ARGS)
    assert "did you mean keep" not in str(caught.value)
    with pytest.raises(WorkloadArgError, match="did you mean keep"):
        check_args("dcgan", {"keeps": 3})


def test_a_list_becomes_one_comma_value_the_workload_parses(tmp_path: Path) -> None:
    flags = accepts(tmp_path, "mnist_cnn", "{class_weights: [0.1, 0, 1, 1, 1, 1, 1, 1, 1, 2.5]}")
    assert flags == ["--class-weights", "0.1,0,1,1,1,1,1,1,1,2.5"]
    parsed = parse_with_workload("mnist_cnn", flags)
    assert parsed is not None
    assert parsed.class_weights == [0.1, 0, 1, 1, 1, 1, 1, 1, 1, 2.5]
    assert accepts(tmp_path, "mnist_cnn", "{class_weights: balanced}") == [
        "--class-weights",
        "balanced",
    ]


def test_switches_dashes_and_numbers_as_text_are_accepted(tmp_path: Path) -> None:
    args = "{freeze-embeddings: true, unidirectional: false, lr: 1e-3, max_len: '128'}"
    flags = accepts(tmp_path, "text_classifier", args)
    assert flags == ["--freeze-embeddings", "--lr", "1e-3", "--max-len", "128"]
    parsed = parse_with_workload("text_classifier", flags)
    assert parsed is not None and parsed.freeze_embeddings and parsed.max_len == 128


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda path: path.name)
def test_every_template_s_args_are_taken_by_its_workload(template: Path) -> None:
    spec = load_spec(template)
    assert spec.workload is not None
    assert parse_with_workload(spec.workload, spec.workload_flags()) is not None


# Values that YAML gives a spec: the checker must take exactly those the workload's parser takes.
SAMPLES: list[object] = [
    0, 1, 2, 64, 128, 224, -1, 10**30, 0.5, 1.5, -0.5, "1e-3", "ten", "", "1", "-1", "-x",
    "balanced", "lstm", "cuda", "vgg11", "max", "a" * 64, "a b",
]  # fmt: skip


@pytest.mark.parametrize("workload", WORKLOADS)
def test_the_checker_agrees_with_the_workload_s_parser(workload: str) -> None:
    known = workload_arguments(workload)
    assert known is not None
    for name, info in known.items():
        if info.flag[2:] in RESERVED_ARGS:
            continue
        samples = [True, False, 1, "yes"] if info.kind == "flag" else SAMPLES
        for value in samples:
            try:
                check_args(workload, {name: value})
                checked = True
            except WorkloadArgError:
                checked = False
            if value is True:
                flags = [info.flag]
            elif value is False:
                flags = []
            else:
                flags = [info.flag, str(value)]
            parsed = parse_with_workload(workload, flags) is not None
            assert checked == parsed, f"{workload} {name}: {value!r} (checker {checked})"


def test_a_workload_without_a_parser_goes_unchecked() -> None:
    assert workload_arguments("no_such_workload") is None
    check_args("no_such_workload", {"anything": [1, True]})


def test_the_schema_offers_each_workload_s_args_to_editors(tmp_path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(gpujobs_cli("schema").stdout)
    rules = {rule["if"]["properties"]["workload"]["const"]: rule for rule in schema["allOf"]}
    assert set(rules) == set(WORKLOADS)
    dcgan = rules["dcgan"]["then"]["properties"]["args"]["properties"]
    assert dcgan["image_size"]["enum"] == [64, 128] and dcgan["amp"]["type"] == "boolean"
    assert "keep" not in dcgan and "data" not in dcgan
    validator = jsonschema.Draft202012Validator(schema)
    for template in TEMPLATES:
        document = yaml.safe_load(template.read_text())
        assert not list(validator.iter_errors(document)), template.name
    assert list(validator.iter_errors({"name": "a", "workload": "dcgan", "args": {"imagesiz": 1}}))
    assert not list(validator.iter_errors({"name": "a", "workload": "dcgan", "args": {"nz": 1}}))


# -- advice at plan time: a workload's plan_notes ------------------------------------------------

NO_WEIGHTS = """\
name: scratch
workload: transfer
args: {synthetic: 30, arch: resnet18, image_size: 32, epochs: 1, batch_size: 16, threads: 1}
providers: [local]
budget: {max_hours: 1}
"""


def warnings_in(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_plan_warns_once_that_transfer_without_weights_trains_from_scratch(
    tmp_path: Path,
) -> None:
    spec = write_spec(tmp_path, NO_WEIGHTS)
    done = gpujobs_cli("plan", str(spec))
    assert done.returncode == 0, done.stderr
    [warning] = warnings_in(done.stderr)
    assert "the resnet18 backbone starts from random init" in warning
    assert "trains from scratch, not transfer learning" in warning
    assert "`files: {/files/resnet18.pth: ./weights/resnet18.pth}`" in warning
    as_json = gpujobs_cli("plan", str(spec), "--json")
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["warnings"] == [warning.removeprefix("warning: ")]
    assert json.loads(gpujobs_cli("status", "--json").stdout) == [], "nothing was started"


def test_launch_warns_before_anything_is_provisioned_and_still_succeeds(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, NO_WEIGHTS)
    done = gpujobs_cli("launch", str(spec), "--runs-dir", str(tmp_path / "runs"), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    [warning] = warnings_in(done.stderr)
    lines = done.stderr.splitlines()
    assert lines.index(warning) < next(i for i, line in enumerate(lines) if "PROVISIONING" in line)
    assert "trains from scratch" in warning


def test_weights_given_or_another_workload_means_no_warning(tmp_path: Path) -> None:
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "resnet18.pth").write_bytes(b"not read at plan time")
    files = "files: {/files/resnet18.pth: ./weights/resnet18.pth}\n"
    with_weights = NO_WEIGHTS.replace("args: {", files + "args: {weights: /files/resnet18.pth, ")
    for text in (with_weights, "name: m\nworkload: mnist_cnn\nargs: {synthetic: 100}\n"):
        done = gpujobs_cli("plan", str(write_spec(tmp_path, text)))
        assert done.returncode == 0, done.stderr
        assert warnings_in(done.stderr) == []
