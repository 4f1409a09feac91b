"""End-to-end behaviour of ``python -m jobs.dcgan`` on tiny generated pictures."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.metrics import read_metrics
from jobs.common.summary import gan_summary
from jobs.dcgan.augment import DiffAugment, cutout, translation
from jobs.dcgan.cli import main
from jobs.dcgan.data import load_pictures
from jobs.dcgan.export import GENERATOR_FILE, generator_parts
from jobs.dcgan.model import Discriminator, Generator
from jobs.dcgan.policy import parse_policy
from jobs.dcgan.quality import QualityProbe, to_signed

MODULE = "jobs.dcgan"
# 64 pictures of 64 px, batch 16 -> 4 steps per epoch; narrow nets keep a step ~0.1 s. One
# thread: the CPUs are shared, and oversubscribed OpenMP threads slow tiny nets down a lot.
OLD_RECIPE = ["--augment", "none", "--no-spectral-norm", "--label-smoothing", "0", "--lr-d", "2e-4"]
TINY = ["--ngf", "8", "--ndf", "8", "--batch-size", "16", "--log-every", "0", "--threads", "1"]


def run(tmp: Path, *extra: str) -> int:
    return main(
        ["--data", str(tmp / "data"), "--out", str(tmp / "out"), "--synthetic", "64", *TINY, *extra]
    )


def final_state(out: Path) -> dict:
    path = latest_checkpoint(out)
    assert path is not None
    return load_checkpoint(path)


def test_nets_have_the_paper_shapes() -> None:
    for size in (64, 128):
        g, d = Generator(100, 8, size), Discriminator(8, size)
        pictures = g(torch.randn(2, 100))
        assert pictures.shape == (2, 3, size, size) and pictures.abs().max() <= 1
        assert d(pictures).shape == (2,)
    # 128 px adds one block to each net.
    assert len(Generator(100, 8, 128).net) == len(Generator(100, 8, 64).net) + 3


def test_spectral_norm_discriminator_has_no_batchnorm_and_unit_norm_convs() -> None:
    d = Discriminator(8, 64, spectral_norm=True)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in d.modules())
    for _ in range(20):  # power iterations run in train-mode forwards
        d(torch.randn(2, 3, 64, 64))
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 5
    for conv in convs:
        sigma = torch.linalg.matrix_norm(conv.weight.detach().flatten(1), ord=2)
        assert sigma == pytest.approx(1.0, rel=0.1)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in Discriminator(8, 64).modules())


def test_diffaugment_keeps_shape_passes_gradients_and_none_is_the_identity() -> None:
    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    augment = DiffAugment(parse_policy("color,translation,cutout"))
    y = augment(x)
    assert y.shape == x.shape and not torch.equal(y, x)
    y.sum().backward()  # differentiable: the generator is trained through it
    assert x.grad is not None and x.grad.abs().sum() > 0
    # No policy: the same tensor, and no random number drawn (old runs stay as they were).
    state = torch.get_rng_state()
    assert DiffAugment(parse_policy("none"))(x) is x
    assert torch.equal(torch.get_rng_state(), state)
    # Translation moves content by at most 1/8 of the side, filling with 0; cutout zeroes a
    # square of half the side (less where it meets an edge).
    ones = torch.ones(64, 3, 32, 32)
    shifted = translation(ones)
    assert ((shifted == 0) | (shifted == 1)).all() and (shifted == 0).any()
    assert (shifted[:, :, 4:28, 4:28] == 1).all()
    holes = (cutout(ones)[:, 0] == 0).sum(dim=(1, 2))
    assert holes.max() == 16 * 16 and holes.min() >= 8 * 8
    with pytest.raises(ValueError, match="unknown augmentation flip"):
        parse_policy("color,flip")


def test_quality_figures_behave(tmp_path: Path) -> None:
    pictures = load_pictures(tmp_path / "data", 64, 256, seed=0).images
    probe = QualityProbe(pictures[:128], nz=8, seed=0, device=torch.device("cpu"))
    same = probe.measure_pictures(to_signed(pictures[:128]))
    assert same.fid_proxy == pytest.approx(0, abs=1e-6)
    assert same.fid_conv == pytest.approx(0, abs=1e-6)
    assert same.diversity == pytest.approx(1.0)
    other_half = probe.measure_pictures(to_signed(pictures[128:]))
    noise = probe.measure_pictures(torch.rand(128, 3, 64, 64) * 2 - 1)
    # Other pictures of the same kind are far closer than noise, in both distances.
    assert other_half.fid_proxy < noise.fid_proxy / 10
    assert other_half.fid_conv < noise.fid_conv / 10
    assert 0.8 < other_half.diversity < 1.25
    # One picture for every noise vector: no diversity at all.
    one = to_signed(pictures[:1]).expand(128, -1, -1, -1)
    assert probe.measure_pictures(one).diversity == pytest.approx(0, abs=1e-6)


def test_two_epochs_discriminator_learns_and_grids_written(tmp_path: Path) -> None:
    out = tmp_path / "out"
    argv = ["--synthetic", "128", "--seed", "0", "--epochs", "2", "--log-every", "4"]
    # The paper's recipe, whose discriminator is free to learn fast (the defaults hold it back
    # on purpose: augmentation, spectral norm, label smoothing).
    argv += OLD_RECIPE
    assert main(["--data", str(tmp_path / "data"), "--out", str(out), *TINY, *argv]) == 0
    rows = read_metrics(out)
    steps = [r for r in rows if r["split"] == "train_step"]
    assert [r["split"] for r in rows].count("train") == 2 and len(steps) == 4
    assert rows[0]["split"] == "init" and rows[0]["fid_proxy"] > 0 and rows[0]["fid_conv"] > 0
    # From near chance to clearly telling real from fake (observed 0.55-0.69 -> 0.85-0.98).
    assert steps[-1]["accuracy"] >= steps[0]["accuracy"] + 0.1 and steps[-1]["accuracy"] > 0.75
    assert steps[-1]["d_real"] - steps[-1]["d_fake"] > 0.2
    assert steps[-1]["loss_d"] < steps[0]["loss_d"]
    assert all(r["fid_proxy"] > 0 and r["samples_per_s"] > 0 for r in rows[1:])
    for name in ("samples-epoch-001.png", "samples-epoch-002.png", "samples-latest.png"):
        with Image.open(out / name) as grid:
            grid.load()
            assert grid.size == (8 * 66 + 2, 8 * 66 + 2)  # 64 pictures of 64 px, padding 2
    for name in ("losses.png", "fid_proxy.png", "fid_conv.png", "diversity.png", "progress.png"):
        with Image.open(out / name) as chart:
            chart.load()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kind"] == "gan" and summary["final"]["epoch"] == 2
    epoch_quality = [r["fid_conv"] for r in rows if r["split"] == "train"]
    assert summary["best_quality"]["value"] == min(epoch_quality)


def test_interrupted_then_resumed_equals_unbroken(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    unbroken, broken = tmp_path / "a", tmp_path / "b"
    assert run(unbroken, "--epochs", "2") == 0
    # Stop mid-epoch 1 (step 3 of 4), then mid-epoch 2 (step 6), then finish.
    assert run(broken, "--epochs", "2", "--max-steps", "3") == 0
    assert final_state(broken / "out")["step"] == 3
    assert run(broken, "--epochs", "2", "--resume", "--max-steps", "6") == 0
    assert run(broken, "--epochs", "2", "--resume") == 0
    assert "resume: " in capsys.readouterr().out

    a, b = final_state(unbroken / "out"), final_state(broken / "out")
    assert a["step"] == b["step"] == 8 and a["epoch"] == b["epoch"] == 2
    for net in ("generator", "discriminator"):
        for name, tensor in a["models"][net].items():
            assert torch.equal(tensor, b["models"][net][name]), (net, name)
        for key, slot in a["optimizers"][net]["state"].items():
            for name, value in slot.items():
                assert torch.equal(value, b["optimizers"][net]["state"][key][name])
    summary = [(r["split"], r["loss"], r["fid_proxy"]) for r in read_metrics(unbroken / "out")]
    resumed = [(r["split"], r["loss"], r["fid_proxy"]) for r in read_metrics(broken / "out")]
    assert resumed == summary


def test_resume_refuses_changed_architecture(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, "--max-steps", "1") == 0
    capsys.readouterr()
    assert run(tmp_path, "--resume", "--nz", "64") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--nz 64 differs from the checkpoint's 100" in err


def test_sigterm_saves_and_exits_0(tmp_path: Path, spawn_module) -> None:
    out = tmp_path / "out"
    proc = spawn_module(
        MODULE, "--data", str(tmp_path / "data"), "--out", str(out), "--synthetic", "64",
        *TINY, "--epochs", "1000", "--log-every", "1",
    )  # fmt: skip
    # Signal once training is under way (a stop before the first step has nothing to save).
    deadline = time.monotonic() + 60
    while not any(r["split"] == "train_step" for r in read_metrics(out)):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    rest, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "stopped by SIGTERM" in rest and "Traceback" not in err
    state = load_checkpoint(latest_checkpoint(out))
    assert state["step"] >= 1 and state["epoch"] < 1000
    assert set(state["models"]) == {"generator", "discriminator"}
    assert all(torch.isfinite(t).all() for t in state["models"]["generator"].values())


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "{tmp}", "--out", "{tmp}/o", "--image-size", "48"], "--image-size"),
        (["--data", "{tmp}/missing", "--out", "{tmp}/o"], "--data"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--beta1", "1.5"], "--beta1"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--augment", "color,flip"], "--augment"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--label-smoothing", "0.5"], "--label-smoothing"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--samples-every", "0"], "--samples-every"),
        (
            ["--data", "{tmp}", "--out", "{tmp}/o", "--max-bad-fraction", "1.5"],
            "--max-bad-fraction",
        ),
    ],
)
def test_bad_flags_exit_2_with_one_line(
    run_module, tmp_path: Path, argv: list[str], needle: str
) -> None:
    result = run_module(MODULE, *(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_folder_without_pictures_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("no pictures here")
    assert main(["--data", str(tmp_path / "data"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no pictures found" in err and "--synthetic" in err


def test_real_pictures_of_any_size_are_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data" / "nested"
    data.mkdir(parents=True)
    for index, size in enumerate([(80, 50), (64, 64), (30, 90), (200, 120)]):
        Image.new("RGB", size, (index * 60, 100, 200)).save(data / f"p{index}.jpg")
    assert run(tmp_path, "--max-steps", "1") == 0  # --synthetic is ignored: pictures exist
    assert "(4 pictures)" in capsys.readouterr().out


# --- picture folders as people have them -------------------------------------------------------


def train_on(data: Path, out: Path, *extra: str) -> int:
    return main(["--data", str(data), "--out", str(out), *TINY, "--max-steps", "1", *extra])


def test_messy_folder_trains_and_names_what_it_skipped_once(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "covers"
    messy.good_pictures(data, 12)
    odd = messy.odd_pictures(data / "odd")
    messy.bad_files(data)
    assert train_on(data, tmp_path / "out") == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line.startswith("warning:")]
    # 12 + 7 readable, 3 unreadable picture files; 4 hidden entries (2 of them folders).
    assert warnings == [
        f"warning: --data {data}: skipped 7 of 26 files (3 unreadable, 4 hidden): "
        "broken.jpg (truncated), empty.png (empty file), notes.jpg (not an image), "
        ".DS_Store (hidden), ._cover.jpg (hidden) and 2 more"
    ]
    assert f"data {data} (19 pictures)" in captured.out

    pictures = load_pictures(data, 64, None, 0)
    assert len(pictures.images) == 19
    # Sorted order: 12 covers, then odd/ (animated, cmyk, grey, palette, rotated, sixteen,
    # transparent): the transparent half of the last one is white, not black.
    assert sorted(odd.values())[-1] == odd["transparent"]
    assert pictures.images[-1][:, 32, 4].tolist() == [255, 255, 255]


def test_folder_of_only_bad_files_is_one_line(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "covers"
    messy.bad_files(data)
    assert train_on(data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(
        f"error: --data {data}: no usable pictures: all 3 picture files are unreadable: "
        "broken.jpg (truncated), empty.png (empty file), notes.jpg (not an image)"
    ), err
    assert "4 hidden" in err and "--synthetic N" in err


def test_mostly_bad_folder_fails_with_the_share_unless_allowed(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "covers"
    messy.good_pictures(data, 2)
    messy.bad_files(data)
    assert train_on(data, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"--data {data}: 3 of 5 picture files (60%) are unreadable" in err
    assert "--max-bad-fraction 0.5" in err and "broken.jpg (truncated)" in err
    assert train_on(data, tmp_path / "out", "--max-bad-fraction", "0.6") == 0
    assert "skipped 7 of 9 files" in capsys.readouterr().err


def test_max_bad_fraction_zero_refuses_a_single_bad_file(
    tmp_path: Path, messy, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "covers"
    messy.good_pictures(data, 20)
    messy.truncated_jpeg(data / "cut.jpg")
    assert train_on(data, tmp_path / "out", "--max-bad-fraction", "0") == 2
    assert "1 of 21 picture files (5%) are unreadable" in capsys.readouterr().err


# --- what a person looks at: grids, progress, the generator file, the verdict ------------------


def test_samples_every_progress_picture_and_generator_file(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # 32 pictures, batch 16: 2 steps per epoch.
    argv = ["--data", str(tmp_path / "data"), "--out", str(out), "--synthetic", "32", *TINY]
    assert main([*argv, "--epochs", "5", "--samples-every", "2", "--samples", "16"]) == 0
    grids = sorted(p.name for p in out.glob("samples-epoch-*.png"))
    # The first epoch, every 2nd, and the last.
    assert grids == [f"samples-epoch-{e:03d}.png" for e in (1, 2, 4, 5)]
    assert (out / "samples-latest.png").is_file()
    with Image.open(out / "progress.png") as progress:
        progress.load()
        # One row per grid (its first 8 pictures of 64 px, padding 2), a label column on the left.
        assert progress.size == (72 + 8 * 66 + 2, 4 * 66 + 2)
    rows = [r for r in read_metrics(out) if r["split"] == "train"]
    assert len(rows) == 5 and all(
        r["fid_conv"] > 0 and r["fid_proxy"] > 0 and r["diversity"] > 0 for r in rows
    )
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final"]["diversity"] == rows[-1]["diversity"]
    assert summary["best_quality"]["value"] == min(r["fid_conv"] for r in rows)

    # generator.pt: the generator alone, the same weights as the newest checkpoint's.
    weights = torch.load(out / GENERATOR_FILE, weights_only=True)
    checkpoint = final_state(out)
    net_args, generator = generator_parts(weights)
    assert net_args == {"nz": 100, "ngf": 8, "image_size": 64} and weights["step"] == 10
    for name, tensor in checkpoint["models"]["generator"].items():
        assert torch.equal(tensor, generator[name]), name
    assert (out / GENERATOR_FILE).stat().st_size < latest_checkpoint(out).stat().st_size / 2


def test_a_gan_forced_to_collapse_gets_the_verdict(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The old recipe, with a discriminator learning 500x faster than a generator that hardly
    # moves: it soon rates every generated picture as fake.
    assert run(tmp_path, *OLD_RECIPE, "--epochs", "4", "--lr", "1e-6", "--lr-d", "5e-4") == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["verdict"] is not None and "collapsed" in summary["verdict"]
    assert "WARNING: " in capsys.readouterr().out


def test_gan_verdicts_from_diversity_and_quality_rows() -> None:
    healthy = [
        {"epoch": e, "step": e, "loss_d": 1.2, "loss_g": 0.9, "d_fake": 0.3, "diversity": 0.8,
         "fid_conv": 1.0 / e}
        for e in range(1, 6)
    ]  # fmt: skip
    fields = {"diversity_field": "diversity", "quality_field": "fid_conv", "fake_field": "d_fake"}
    assert gan_summary(healthy, workload="dcgan", **fields)["verdict"] is None
    # Label smoothing keeps D's loss high, but D(G(z)) near 0 still says it wins every batch.
    wins = [{**row, "d_fake": 0.004, "loss_d": 0.4} for row in healthy]
    assert "wins every batch" in gan_summary(wins, workload="dcgan", **fields)["verdict"]
    same = [*healthy[:-1], {**healthy[-1], "diversity": 0.001}]
    assert "mode collapse" in gan_summary(same, workload="dcgan", **fields)["verdict"]
    worse = [*healthy, {**healthy[-1], "epoch": 6, "step": 6, "fid_conv": 0.9}]
    verdict = gan_summary(worse, workload="dcgan", **fields)["verdict"]
    assert "got worse" in verdict and "epoch 5" in verdict


def test_a_checkpoint_from_before_the_new_recipe_resumes_only_with_the_old_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(tmp_path, *OLD_RECIPE, "--max-steps", "1") == 0
    path = latest_checkpoint(tmp_path / "out")
    state = load_checkpoint(path)
    for key in ("augment", "no_spectral_norm", "label_smoothing", "lr_d"):
        del state["args"][key]  # as a checkpoint written before these flags existed
    torch.save(state, path)
    capsys.readouterr()
    assert run(tmp_path, "--resume", "--max-steps", "2") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--augment color,translation,cutout differs from the " in err
    assert "checkpoint's none" in err
    assert run(tmp_path, *OLD_RECIPE, "--resume", "--max-steps", "2") == 0
    assert final_state(tmp_path / "out")["step"] == 2
