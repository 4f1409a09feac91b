"""``python -m jobs.transfer``: torchvision parity of the backbones, weights from files and
URLs, the two training stages, exact resume, SIGTERM and predict, on tiny generated data."""

from __future__ import annotations

import argparse
import hashlib
import http.server
import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.common.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from jobs.common.metrics import read_metrics
from jobs.transfer.cli import ARCHS as CLI_ARCHS
from jobs.transfer.cli import build_parser, main, plan_notes
from jobs.transfer.data import load_splits
from jobs.transfer.models import ARCHS, build_model
from jobs.transfer.rates import DEFAULT_RATES, stage_rates
from jobs.transfer.stages import FINETUNE, FROZEN, clip_norm, enter_stage

MODULE = "jobs.transfer"
REPO_ROOT = Path(__file__).resolve().parents[2]
# 48 train / 12 val pictures at 32 px, batch 16: 3 steps per epoch, well under a second each.
TINY = [
    "--arch",
    "resnet18",
    "--image-size",
    "32",
    "--batch-size",
    "16",
    "--log-every",
    "1",
    "--seed",
    "3",
    "--threads",
    "2",
]

# From torchvision.models (vgg.py, resnet.py) with the ImageNet head: number of state_dict
# entries, number of parameters, and a sample of names and shapes.
TORCHVISION = {
    "vgg11": (22, 132_863_336),
    "vgg11_bn": (62, 132_868_840),
    "vgg16": (32, 138_357_544),
    "vgg16_bn": (97, 138_365_992),
    "vgg19": (38, 143_667_240),
    "vgg19_bn": (118, 143_678_248),
    "resnet18": (122, 11_689_512),
    "resnet34": (218, 21_797_672),
    "resnet50": (320, 25_557_032),
}
VGG11_KEYS = [
    ("features.0.weight", (64, 3, 3, 3)),
    ("features.0.bias", (64,)),
    ("features.3.weight", (128, 64, 3, 3)),
    ("features.3.bias", (128,)),
    ("features.6.weight", (256, 128, 3, 3)),
    ("features.6.bias", (256,)),
    ("features.8.weight", (256, 256, 3, 3)),
    ("features.8.bias", (256,)),
    ("features.11.weight", (512, 256, 3, 3)),
    ("features.11.bias", (512,)),
    ("features.13.weight", (512, 512, 3, 3)),
    ("features.13.bias", (512,)),
    ("features.16.weight", (512, 512, 3, 3)),
    ("features.16.bias", (512,)),
    ("features.18.weight", (512, 512, 3, 3)),
    ("features.18.bias", (512,)),
    ("classifier.0.weight", (4096, 25088)),
    ("classifier.0.bias", (4096,)),
    ("classifier.3.weight", (4096, 4096)),
    ("classifier.3.bias", (4096,)),
    ("classifier.6.weight", (1000, 4096)),
    ("classifier.6.bias", (1000,)),
]
SAMPLES = {
    "resnet18": [
        ("conv1.weight", (64, 3, 7, 7)),
        ("bn1.running_var", (64,)),
        ("bn1.num_batches_tracked", ()),
        ("layer1.0.conv1.weight", (64, 64, 3, 3)),
        ("layer1.1.bn2.bias", (64,)),
        ("layer2.0.conv1.weight", (128, 64, 3, 3)),
        ("layer2.0.downsample.0.weight", (128, 64, 1, 1)),
        ("layer2.0.downsample.1.running_mean", (128,)),
        ("layer4.1.conv2.weight", (512, 512, 3, 3)),
        ("fc.weight", (1000, 512)),
        ("fc.bias", (1000,)),
    ],
    "resnet50": [
        ("layer1.0.conv1.weight", (64, 64, 1, 1)),
        ("layer1.0.conv3.weight", (256, 64, 1, 1)),
        ("layer1.0.downsample.0.weight", (256, 64, 1, 1)),
        ("layer2.0.conv2.weight", (128, 128, 3, 3)),
        ("layer4.2.bn3.weight", (2048,)),
        ("fc.weight", (1000, 2048)),
    ],
    "vgg19_bn": [
        ("features.0.weight", (64, 3, 3, 3)),
        ("features.1.running_mean", (64,)),
        ("features.49.weight", (512, 512, 3, 3)),
        ("features.50.num_batches_tracked", ()),
        ("classifier.6.weight", (1000, 4096)),
    ],
}


def meta_state(arch: str, num_classes: int = 1000) -> dict[str, torch.Tensor]:
    with torch.device("meta"):  # shapes without memory: VGG's classifier alone is 400 MB
        return build_model(arch, num_classes).state_dict()


@pytest.mark.parametrize("arch", ARCHS)
def test_state_dict_matches_torchvision(arch: str) -> None:
    state = meta_state(arch)
    count, params = TORCHVISION[arch]
    assert len(state) == count
    assert (
        sum(v.numel() for k, v in state.items() if "running" not in k and "num_batches" not in k)
        == params
    )
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if arch == "vgg11":
        assert list(shapes.items()) == VGG11_KEYS
    for key, shape in SAMPLES.get(arch, []):
        assert shapes[key] == shape, key
    assert ARCHS == CLI_ARCHS


# --- helpers -----------------------------------------------------------------------------------


def write_colour_set(root: Path, count: int, size: int = 32, seed: int = 0) -> Path:
    """Noisy pictures whose class is the dominant colour: learnable in a few steps even by a
    head on random features."""
    rng = np.random.default_rng(seed)
    for index in range(count):
        name = ("red", "blue")[index % 2]
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 90, (size, size, 3))
        pixels[..., 0 if name == "red" else 2] += rng.integers(120, 160)
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{name}-{index:04d}.png")
    return root


def save_weights_in_subprocess(path: Path, arch: str, expanded: bool = False) -> None:
    """Weights written by another process, with plain torch.save, as a download would be.
    `expanded`: every tensor a zero-stride view of one value, so even VGG's 530 MB of names
    and shapes makes a file of a few kilobytes."""
    code = (
        "import sys, torch\n"
        "from jobs.transfer.models import build_model\n"
        "torch.manual_seed(1234)\n"
        f"arch, expanded = {arch!r}, {expanded!r}\n"
        "if expanded:\n"
        "    with torch.device('meta'):\n"
        "        ref = build_model(arch).state_dict()\n"
        "    state = {k: torch.zeros((), dtype=v.dtype).expand(v.shape) for k, v in ref.items()}\n"
        "else:\n"
        "    state = build_model(arch).state_dict()\n"
        "torch.save(state, sys.argv[1])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, check=True, timeout=120)


@pytest.fixture(scope="module")
def resnet18_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "resnet18-test.pth"
    save_weights_in_subprocess(path, "resnet18")
    return path


@pytest.fixture(scope="module")
def colours(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_colour_set(tmp_path_factory.mktemp("colours") / "data", 60)


def train(data: Path, out: Path, *extra: str) -> int:
    return main(["--data", str(data), "--out", str(out), *TINY, *extra])


def model_state(out: Path, step: int | None = None) -> dict[str, torch.Tensor]:
    path = latest_checkpoint(out) if step is None else out / f"ckpt-{step:08d}.pt"
    return load_checkpoint(path)["models"]["model"]


def one_error_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)


# --- weights -----------------------------------------------------------------------------------


class CountingServer:
    """http.server on 127.0.0.1 in a thread, serving a folder and counting GETs."""

    def __init__(self, folder: Path) -> None:
        self.hits = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: object, **kwargs: object) -> None:
                super().__init__(*args, directory=str(folder), **kwargs)

            def do_GET(self) -> None:
                outer.hits += 1
                super().do_GET()

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(resnet18_file: Path) -> Iterator[CountingServer]:
    running = CountingServer(resnet18_file.parent)
    yield running
    running.close()


def test_url_weights_download_once_then_cache(
    tmp_path: Path,
    colours: Path,
    server: CountingServer,
    resnet18_file: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url = f"{server.url}/{resnet18_file.name}"
    cache = tmp_path / "cache"
    sha = hashlib.sha256(resnet18_file.read_bytes()).hexdigest()
    common = ["--weights", url, "--weights-cache", str(cache), "--max-steps", "1"]
    assert train(colours, tmp_path / "a", *common, "--weights-sha256", sha) == 0
    assert server.hits == 1 and "downloading" in capsys.readouterr().out
    assert (cache / resnet18_file.name).read_bytes() == resnet18_file.read_bytes()
    assert not [p for p in cache.iterdir() if p.name.startswith(".")]  # no temp file left
    assert train(colours, tmp_path / "b", *common) == 0
    assert server.hits == 1 and "using cached" in capsys.readouterr().out

    assert train(colours, tmp_path / "c", *common, "--weights-sha256", "0" * 64) == 2
    one_error_line(capsys.readouterr().err, "--weights-sha256", "expected " + "0" * 64)
    missing = ["--weights", f"{server.url}/nope.pth", "--weights-cache", str(cache)]
    assert train(colours, tmp_path / "d", *missing) == 2
    one_error_line(capsys.readouterr().err, "download failed", "404")


def test_weights_file_loads_and_frozen_stage_keeps_backbone(
    tmp_path: Path, colours: Path, resnet18_file: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = [
        "--weights",
        str(resnet18_file),
        "--epochs",
        "2",
        "--frozen-epochs",
        "1",
        "--optimizer",
        "adamw",
        "--lr",
        "0.01",
        "--finetune-lr",
        "0.001",
        "--keep",
        "10",
    ]
    assert train(colours, out, *args) == 0
    assert "resnet18 (weights resnet18-test.pth (120 tensors))" in capsys.readouterr().out
    file = torch.load(resnet18_file, weights_only=True)
    after_frozen, after_finetune = model_state(out, 3), model_state(out, 6)
    for key, tensor in file.items():
        if key.startswith("fc."):
            assert after_frozen[key].shape[0] == 2  # the new two-class head
        else:  # parameters and batch-norm statistics alike, bit for bit
            assert torch.equal(after_frozen[key], tensor), key
    assert not torch.equal(after_finetune["conv1.weight"], file["conv1.weight"])

    rows = read_metrics(out)
    assert [r["stage"] for r in rows if r["split"] == "val"] == ["frozen", "finetune"]
    steps = [r for r in rows if r["split"] == "train_step"]
    assert steps[-1]["loss"] < steps[0]["loss"]
    assert rows[-1]["split"] == "val" and rows[-1]["accuracy"] > 0.75  # chance is 0.5
    assert (out / "loss.png").stat().st_size > 0 and (out / "accuracy.png").exists()

    # predict, on pictures it never saw
    unseen = write_colour_set(tmp_path / "unseen", 2, seed=99)
    red = next((unseen / "red").iterdir())
    assert main(["predict", "--checkpoint", str(out), str(red)]) == 0
    path, label, confidence = capsys.readouterr().out.split()
    assert (path, label) == (str(red), "red") and 0.5 < float(confidence) <= 1
    assert (
        main(["predict", "--checkpoint", str(latest_checkpoint(out)), "--json", str(unseen)]) == 0
    )
    rows = json.loads(capsys.readouterr().out)
    assert [Path(r["path"]).parent.name for r in rows] == [r["class"] for r in rows]


def test_mismatched_weights_name_the_problem(
    tmp_path: Path, colours: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    vgg = tmp_path / "vgg11-test.pth"
    save_weights_in_subprocess(vgg, "vgg11", expanded=True)
    assert train(colours, tmp_path / "out", "--weights", str(vgg)) == 2
    one_error_line(
        capsys.readouterr().err,
        "does not fit --arch resnet18",
        "missing (conv1.weight",
        "unexpected (features.0.weight",
        "looks like vgg11",
    )
    assert (
        main(
            [
                "--data",
                str(colours),
                "--out",
                str(tmp_path / "o"),
                "--weights",
                str(tmp_path / "none.pth"),
            ]
        )
        == 2
    )
    one_error_line(capsys.readouterr().err, "--weights", "file not found")


# --- training ----------------------------------------------------------------------------------


def test_resume_equals_unbroken_across_stages(
    tmp_path: Path, colours: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "--epochs",
        "2",
        "--frozen-epochs",
        "1",
        "--augment",
        "--optimizer",
        "sgd",
        "--lr",
        "0.05",
    ]
    unbroken, broken = tmp_path / "a", tmp_path / "b"
    assert train(colours, unbroken, *args) == 0
    assert train(colours, broken, *args, "--max-steps", "2") == 0  # mid frozen epoch
    assert load_checkpoint(latest_checkpoint(broken))["extra"]["stage"] == "frozen"
    assert train(colours, broken, *args, "--resume", "--max-steps", "4") == 0  # mid fine-tune
    assert load_checkpoint(latest_checkpoint(broken))["extra"]["stage"] == "finetune"
    assert train(colours, broken, *args, "--resume") == 0
    assert "finetune stage)" in capsys.readouterr().out
    a, b = load_checkpoint(latest_checkpoint(unbroken)), load_checkpoint(latest_checkpoint(broken))
    assert a["step"] == b["step"] == 6
    for key, tensor in a["models"]["model"].items():
        assert torch.equal(tensor, b["models"]["model"][key]), key
    summaries = [
        [
            (r["split"], r["loss"], r["accuracy"])
            for r in read_metrics(out)
            if r["split"] in ("train", "val")
        ]
        for out in (unbroken, broken)
    ]
    assert summaries[0] == summaries[1]


def test_synthetic_shapes_fill_an_empty_data_folder(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert train(data, tmp_path / "out", "--synthetic", "20", "--max-steps", "1") == 0
    assert sorted(p.name for p in data.iterdir()) == ["disc", "square"]
    assert len(list((data / "disc").iterdir())) == 10
    assert load_checkpoint(latest_checkpoint(tmp_path / "out"))["extra"]["class_names"] == [
        "disc",
        "square",
    ]


def test_sigterm_saves_and_exits_0(tmp_path: Path, colours: Path, spawn_module) -> None:
    out = tmp_path / "out"
    proc = spawn_module(
        MODULE,
        "--data",
        str(colours),
        "--out",
        str(out),
        *TINY,
        "--epochs",
        "1000",
        "--frozen-epochs",
        "0",
    )
    for line in proc.stdout:
        if line.startswith("transfer: "):  # data and model ready, training begins
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in rest and "Traceback" not in err
    state = load_checkpoint(latest_checkpoint(out))
    assert state["epoch"] < 1000 and state["extra"]["stage"] == "finetune"
    assert all(torch.isfinite(t).all() for t in state["models"]["model"].values())
    assert list_checkpoints(out)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "{tmp}", "--out", "{tmp}/o", "--image-size", "8"], "--image-size"),
        (["--data", "{tmp}/missing", "--out", "{tmp}/o"], "--data"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--weights-sha256", "abc"], "--weights-sha256"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--arch", "vgg12"], "--arch"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--max-bad-fraction", "-1"], "--max-bad-fraction"),
        (["predict", "--checkpoint", "{tmp}/none", "x.png"], "--checkpoint"),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    run_module, tmp_path: Path, argv: list[str], needle: str
) -> None:
    result = run_module(MODULE, *(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == 2
    one_error_line(result.stderr, needle)


# --- learning rates, clipping and the planner's note -------------------------------------------


def parsed(*flags: str) -> argparse.Namespace:
    return build_parser().parse_args(["--data", "d", "--out", "o", *flags])


@pytest.mark.parametrize(
    ("arch", "optimizer", "head", "finetune"),
    [
        ("resnet18", "sgd", 1e-2, 1e-3),
        ("resnet50", "adamw", 1e-3, 1e-4),
        ("vgg16", "sgd", 1e-3, 1e-4),
        # AdamW at 1e-3 blew a VGG19 fine-tune's loss up to 36.8: a hundred times lower.
        ("vgg19", "adamw", 1e-3, 1e-5),
        ("vgg19_bn", "adamw", 1e-3, 1e-5),
    ],
)
def test_each_backbone_and_optimizer_has_its_own_stage_rates(
    arch: str, optimizer: str, head: float, finetune: float
) -> None:
    args = parsed("--arch", arch, "--optimizer", optimizer)
    assert (args.lr, args.finetune_lr) == (None, None)  # left to the table
    model = build_model(arch, 2) if arch.startswith("resnet") else None
    rates = stage_rates(args.arch, args.optimizer, args.lr, args.finetune_lr)
    assert (rates.head, rates.finetune) == (head, finetune)
    family = "vgg" if arch.startswith("vgg") else "resnet"
    assert rates.source == f"the defaults for {family} + {optimizer}"
    if model is not None:  # the optimizers are built with them
        assert enter_stage(model, FROZEN, args).param_groups[0]["lr"] == head
        assert enter_stage(model, FINETUNE, args).param_groups[0]["lr"] == finetune


def test_explicit_rates_win_over_the_defaults() -> None:
    both = stage_rates("vgg19", "adamw", lr=0.003, finetune_lr=0.001)
    assert (both.head, both.finetune, both.source) == (0.003, 0.001, "--lr and --finetune-lr")
    # --lr alone: fine-tuning keeps the table's ratio to it (VGG under AdamW: 1/100).
    head_only = stage_rates("vgg19", "adamw", lr=0.002)
    assert (head_only.head, head_only.finetune) == (0.002, 2e-5)
    finetune_only = stage_rates("resnet18", "sgd", finetune_lr=0.0005)
    assert (finetune_only.head, finetune_only.finetune) == (1e-2, 0.0005)
    assert set(DEFAULT_RATES) == {(f, o) for f in ("vgg", "resnet") for o in ("sgd", "adamw")}


def test_gradients_are_clipped_only_while_fine_tuning() -> None:
    assert clip_norm(parsed(), FROZEN) is None
    assert clip_norm(parsed(), FINETUNE) == 5.0
    assert clip_norm(parsed("--clip", "0.5"), FINETUNE) == 0.5
    assert clip_norm(parsed("--clip", "0"), FINETUNE) is None


def test_the_planner_hears_that_no_weights_means_training_from_scratch() -> None:
    [note] = plan_notes({"arch": "resnet18", "synthetic": 600})
    assert "the resnet18 backbone starts from random init" in note
    assert "trains from scratch, not transfer learning" in note
    assert "`files: {/files/resnet18.pth: ./weights/resnet18.pth}`" in note
    assert "`args: {weights: /files/resnet18.pth}`" in note
    assert "vgg19 backbone" in plan_notes({})[0]  # the default arch
    assert plan_notes({"weights": "/files/resnet18.pth", "arch": "resnet18"}) == []


# --- picture folders as people have them -------------------------------------------------------


def write_messy_classes(root: Path, messy) -> Path:
    """cats/ with the unreadable and hidden files of a real folder, dogs/ with odd but
    readable pictures, and at the top the folders that are not classes."""
    messy.good_pictures(root / "cats", 6)
    messy.bad_files(root / "cats")
    messy.good_pictures(root / "dogs", 6, seed=50)
    messy.odd_pictures(root / "dogs")
    (root / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    # A Mac zip's twin tree and a notebook's copies: picture-named files in class-like folders.
    (root / "__MACOSX" / "cats").mkdir(parents=True)
    (root / "__MACOSX" / "cats" / "._cover-000.jpg").write_bytes(b"\x00\x05\x16\x07")
    messy.good_pictures(root / ".ipynb_checkpoints" / "birds", 2)
    return root


def test_messy_class_folders_load_and_name_what_was_skipped(tmp_path: Path, messy) -> None:
    data = write_messy_classes(tmp_path / "data", messy)
    splits = load_splits(data, 32, 0.25, seed=0)
    assert splits.class_names == ["cats", "dogs"]
    labels = torch.cat([splits.train_y, splits.val_y])
    assert len(labels) == 19 and labels.bincount().tolist() == [6, 13]
    assert splits.train_x.shape[1:] == (3, 32, 32) and len(splits.val_y) == 5
    assert splits.warning == (
        f"warning: --data {data}: skipped 10 of 29 files (3 unreadable, 7 hidden): "
        "cats/broken.jpg (truncated), cats/empty.png (empty file), "
        "cats/notes.jpg (not an image), .DS_Store (hidden), .ipynb_checkpoints/ (hidden) "
        "and 5 more"
    )


def test_messy_class_folders_train_with_one_warning_line(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_messy_classes(tmp_path / "data", messy)
    assert train(data, tmp_path / "out", "--max-steps", "1", "--val-fraction", "0.25") == 0
    captured = capsys.readouterr()
    assert [line for line in captured.err.splitlines() if "skipped" in line] == [
        load_splits(data, 32, 0.25, seed=3).warning
    ]
    assert "2 classes (cats, dogs)" in captured.out


def test_class_folder_with_only_bad_files_is_named(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    messy.good_pictures(data / "cats", 6)
    messy.truncated_jpeg(data / "dogs" / "rex.jpg")
    (data / "dogs" / "fido.png").write_bytes(b"")
    assert train(data, tmp_path / "out") == 2
    one_error_line(
        capsys.readouterr().err,
        f"--data {data}: class folder dogs/ has no readable picture: "
        "dogs/fido.png (empty file), dogs/rex.jpg (truncated)",
        "remove the folder",
    )


def test_train_val_folders_share_one_bad_fraction(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    for split in ("train", "val"):
        for name in ("cats", "dogs"):
            messy.good_pictures(data / split / name, 2, seed=len(name))
    for index in range(5):
        messy.truncated_jpeg(data / "val" / "dogs" / f"cut-{index}.jpg")
    # 5 of 13 unreadable (38%), all in val/: fine at 0.5, refused at 0.3.
    assert train(data, tmp_path / "out", "--max-steps", "1") == 0
    assert "skipped 5 of 13 files (5 unreadable)" in capsys.readouterr().err
    assert train(data, tmp_path / "out2", "--max-bad-fraction", "0.3") == 2
    one_error_line(capsys.readouterr().err, "5 of 13 picture files (38%)", "val/dogs/cut-0.jpg")


def test_predict_skips_unreadable_pictures(
    tmp_path: Path, colours: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert train(colours, out, "--max-steps", "1") == 0
    folder = write_colour_set(tmp_path / "new", 2, seed=7)
    messy.truncated_jpeg(folder / "red" / "cut.jpg")
    (folder / "red" / "._cut.jpg").write_bytes(b"\x00\x05\x16\x07")
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(out), "--json", str(folder)]) == 0
    captured = capsys.readouterr()
    rows = json.loads(captured.out)
    assert sorted(Path(row["path"]).name for row in rows) == ["blue-0001.png", "red-0000.png"]
    assert captured.err.splitlines() == [
        f"warning: predict: skipped 2 of 4 files (1 unreadable, 1 hidden): "
        f"{folder}/red/cut.jpg (truncated), {folder}/red/._cut.jpg (hidden)"
    ]
    assert main(["predict", "--checkpoint", str(out), str(folder / "red" / "cut.jpg")]) == 2
    one_error_line(capsys.readouterr().err, "no usable pictures", "cut.jpg (truncated)")
