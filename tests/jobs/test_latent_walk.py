"""``python -m jobs.latent_walk`` on a tiny dcgan checkpoint trained by the test, and slerp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.dcgan.cli import main as dcgan_main
from jobs.dcgan.model import Generator
from jobs.latent_walk.cli import main
from jobs.latent_walk.slerp import slerp, walk_path

MODULE = "jobs.latent_walk"
ONE_THREAD = ["--threads", "1"]  # shared CPUs: oversubscribed threads slow tiny nets a lot


@pytest.fixture(scope="module")
def dcgan_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dcgan --out folder after 6 steps of a narrow net on 64 generated pictures."""
    root = tmp_path_factory.mktemp("dcgan")
    argv = ["--data", str(root / "data"), "--out", str(root / "run"), "--synthetic", "64"]
    tiny = ["--ngf", "8", "--ndf", "8", "--nz", "16", "--batch-size", "16", "--epochs", "2"]
    assert dcgan_main([*argv, *tiny, "--max-steps", "6", "--log-every", "0", *ONE_THREAD]) == 0
    return root / "run"


def frame_array(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"), dtype=np.int16)


def test_walk_frames_gif_and_sheet(dcgan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "walk"
    argv = ["--data", str(dcgan_run.parent), "--out", str(out), "--points", "3"]
    assert main([*argv, "--frames-per-step", "4", "--seed", "5", *ONE_THREAD]) == 0
    frames = sorted((out / "frames").glob("frame-*.png"))
    assert [p.name for p in frames] == [f"frame-{i:05d}.png" for i in range(9)]  # (3-1)*4+1
    with Image.open(out / "walk.gif") as gif:
        assert gif.n_frames == 9 and gif.size == (64, 64)
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.size == (4 * 66 + 2, 3 * 66 + 2)  # one row per step, 64 px + padding 2

    # Frame 0 is the generator's picture of the first latent point (seeded N(0, I)).
    state = load_checkpoint(latest_checkpoint(dcgan_run))
    generator = Generator(16, 8, 64)
    generator.load_state_dict(state["models"]["generator"])
    first = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))[:1]
    with torch.no_grad():
        expected = generator.eval()(first)[0].add(1).div(2).clamp(0, 1)
    expected_pixels = expected.mul(255).round().permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(frame_array(frames[0]) - expected_pixels).max() <= 1
    assert expected_pixels.std() > 0  # not a blank picture
    # The walk moves: the last frame is another point's picture.
    assert np.abs(frame_array(frames[-1]) - frame_array(frames[0])).max() > 8


def test_rewalk_with_fewer_frames_leaves_no_stale_frames(dcgan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "walk"
    checkpoint = str(latest_checkpoint(dcgan_run))
    base = ["--data", str(tmp_path), "--out", str(out), "--checkpoint", checkpoint, *ONE_THREAD]
    assert main([*base, "--points", "4", "--frames-per-step", "3"]) == 0
    assert main([*base, "--points", "2", "--frames-per-step", "2"]) == 0
    assert len(list((out / "frames").glob("frame-*.png"))) == 3


def test_synthetic_steps_trains_a_small_dcgan_first(tmp_path: Path) -> None:
    out = tmp_path / "walk"
    argv = ["--data", str(tmp_path / "empty"), "--out", str(out), "--synthetic-steps", "2"]
    assert main([*argv, "--points", "2", "--frames-per-step", "2", *ONE_THREAD]) == 0
    assert load_checkpoint(latest_checkpoint(out / "synthetic-dcgan"))["step"] == 2
    assert len(list((out / "frames").glob("frame-*.png"))) == 3


def test_slerp_endpoints_are_exact_and_norm_is_kept() -> None:
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(100, generator=gen), torch.randn(100, generator=gen)
    t = torch.linspace(0, 1, 11)
    path = slerp(a, b, t)
    assert path.shape == (11, 100)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    # Equal-norm endpoints: every point keeps the norm (a straight line would sag ~30%).
    unit_b = b / b.norm() * a.norm()
    norms = slerp(a, unit_b, t).norm(dim=1)
    assert torch.allclose(norms, a.norm().expand(11), rtol=1e-5)
    assert ((a + unit_b) / 2).norm() < 0.8 * a.norm()
    # Unequal norms: monotone between the two, never below the shorter one.
    norms = slerp(a, 2 * b, t).norm(dim=1)
    assert (norms.diff() > 0).all() and norms.min() >= a.norm() - 1e-4
    # Nearly parallel points fall back to a straight line instead of dividing by ~0.
    close = slerp(a, a * 1.0000001, t)
    assert torch.isfinite(close).all() and torch.allclose(close[5], a, rtol=1e-5)


def test_walk_path_visits_every_point() -> None:
    points = torch.randn(4, 8, generator=torch.Generator().manual_seed(1))
    path = walk_path(points, 5)
    assert path.shape == (16, 8)
    for index in range(4):
        assert torch.equal(path[index * 5], points[index])


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--data", "{tmp}", "--out", "{tmp}/o"], "no dcgan checkpoint"),
        (["--data", "{tmp}/missing", "--out", "{tmp}/o"], "--synthetic-steps"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--checkpoint", "{tmp}/x.pt"], "--checkpoint"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--points", "1"], "--points"),
    ],
)
def test_missing_checkpoint_or_bad_flag_exit_2_with_one_line(
    run_module, tmp_path: Path, argv: list[str], needle: str
) -> None:
    result = run_module(MODULE, *(a.format(tmp=tmp_path) for a in argv))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert needle in result.stderr and "Traceback" not in result.stderr


def test_not_a_dcgan_checkpoint_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bogus = tmp_path / "ckpt-00000001.pt"
    torch.save({"models": {"model": {}}, "args": {}}, bogus)
    assert main(["--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a dcgan checkpoint" in err
