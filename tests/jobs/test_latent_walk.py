"""``python -m jobs.latent_walk`` on a tiny dcgan checkpoint trained by the test, and slerp."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jobs.common.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from jobs.dcgan.cli import main as dcgan_main
from jobs.dcgan.model import Generator
from jobs.latent_walk.cli import main
from jobs.latent_walk.slerp import slerp, walk_path
from jobs.latent_walk.synthetic import FOLDER, training_pictures_folder
from jobs.latent_walk.video import find_ffmpeg

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
    argv = ["--data", str(dcgan_run.parent), "--out", str(out), "--points", "3", "--video", "gif"]
    assert main([*argv, "--frames-per-step", "4", "--seed", "5", *ONE_THREAD]) == 0
    frames = sorted((out / "frames").glob("frame-*.png"))
    assert [p.name for p in frames] == [f"frame-{i:05d}.png" for i in range(9)]  # (3-1)*4+1
    with Image.open(out / "walk.gif") as gif:
        assert gif.n_frames == 9 and gif.size == (64, 64) and gif.info["duration"] == 80
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


def test_synthetic_steps_trains_a_small_dcgan_first_under_keep(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "walk"
    argv = ["--data", str(tmp_path / "empty"), "--out", str(out), "--synthetic-steps", "3"]
    argv += ["--points", "2", "--frames-per-step", "2", *ONE_THREAD]
    # A checkpoint after every step (0.0001 minutes), of which --keep 2 stay.
    every_step = ["--checkpoint-every-minutes", "0.0001", "--keep", "2"]
    scratch = training_pictures_folder(
        argparse.Namespace(out=out, seed=0, keep_training_pictures=False)
    ).parent
    try:
        assert main([*argv, *every_step]) == 0
        assert "shape pictures to " + str(scratch) in capsys.readouterr().out
        assert not scratch.exists()  # on the node only while training needed them
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    nested = out / FOLDER
    assert [step for step, _ in list_checkpoints(nested)] == [2, 3]
    assert load_checkpoint(nested / "generator.pt")["step"] == 3
    assert len(list((out / "frames").glob("frame-*.png"))) == 3
    # What comes home holds no training pictures: only the walk and the small DCGAN's run.
    assert not list(out.rglob("shape*")) and not list(nested.rglob("disc-*.png"))


def test_training_pictures_come_home_only_when_asked(tmp_path: Path) -> None:
    def folder(keep: bool, out: Path = tmp_path / "walk", seed: int = 0) -> Path:
        return training_pictures_folder(
            argparse.Namespace(out=out, seed=seed, keep_training_pictures=keep)
        )

    assert folder(True) == tmp_path / "walk" / FOLDER / "shapes"
    assert not folder(False).is_relative_to(tmp_path / "walk")
    # Two walks on one node (another --out or seed) never share a scratch folder.
    assert folder(False) != folder(False, out=tmp_path / "other") != folder(False, seed=1)


def test_size_and_fps_are_honoured_in_frames_and_gif(dcgan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "walk"
    argv = ["--data", str(dcgan_run), "--out", str(out), "--points", "2", "--frames-per-step", "3"]
    assert main([*argv, "--size", "96", "--fps", "20", "--video", "gif", *ONE_THREAD]) == 0
    with Image.open(out / "walk.gif") as gif:
        assert gif.size == (96, 96) and gif.info["duration"] == 50  # 1/20 s
    with Image.open(out / "frames" / "frame-00000.png") as frame:
        assert frame.size == (96, 96)
    with Image.open(out / "contact-sheet.png") as sheet:
        assert sheet.size == (3 * 66 + 2, 2 * 66 + 2)  # 4 frames at the generator's 64 px
    # --frame-ms says the same as --fps, the older way.
    assert main([*argv, "--frame-ms", "120", "--video", "gif", *ONE_THREAD]) == 0
    with Image.open(out / "walk.gif") as gif:
        assert gif.size == (64, 64) and gif.info["duration"] == 120


@pytest.mark.skipif(find_ffmpeg() is None, reason="no ffmpeg on PATH and no imageio-ffmpeg")
def test_mp4_when_an_encoder_is_present(dcgan_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "walk"
    argv = ["--data", str(dcgan_run), "--out", str(out), "--points", "2", "--frames-per-step", "3"]
    assert main([*argv, "--size", "128", "--fps", "24", *ONE_THREAD]) == 0
    data = (out / "walk.mp4").read_bytes()
    assert data[4:8] == b"ftyp" and not (out / "walk.gif").exists()
    # ffmpeg itself reads it back: H.264, the size and rate asked for.
    probe = subprocess.run(
        [find_ffmpeg(), "-hide_banner", "-i", str(out / "walk.mp4")],
        capture_output=True,
        text=True,
        check=False,
    )
    stream = next(line for line in probe.stderr.splitlines() if "Video:" in line)
    assert "h264" in stream and "128x128" in stream and "24 fps" in stream


STAND_IN_FFMPEG = """#!/bin/sh
# Writes what it was asked for instead of a video: the size, the rate, the bytes it was sent.
for last; do :; done
while [ $# -gt 0 ]; do
  case "$1" in -s) size=$2 ;; -r) rate=$2 ;; esac
  shift
done
bytes=$(wc -c | tr -d ' ')
printf '....ftyp size=%s rate=%s bytes=%s' "$size" "$rate" "$bytes" > "$last"
"""


def test_every_frame_goes_to_ffmpeg_at_the_size_and_rate_asked(
    dcgan_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The MP4 plumbing on machines without an encoder: a stand-in ffmpeg first on PATH."""
    stand_in = tmp_path / "bin" / "ffmpeg"
    stand_in.parent.mkdir()
    stand_in.write_text(STAND_IN_FFMPEG)
    stand_in.chmod(0o755)
    monkeypatch.setenv("PATH", f"{stand_in.parent}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "walk"
    argv = ["--data", str(dcgan_run), "--out", str(out), "--points", "2", "--frames-per-step", "3"]
    assert main([*argv, "--size", "96", "--fps", "20", "--video", "mp4", *ONE_THREAD]) == 0
    frames = 4  # (2 - 1) * 3 + 1
    assert (
        out / "walk.mp4"
    ).read_text() == f"....ftyp size=96x96 rate=20 bytes={96 * 96 * 3 * frames}"
    assert not list(out.glob(".walk.mp4*"))  # written under a temporary name, then renamed


def test_without_an_encoder_auto_writes_a_gif_and_says_so(
    dcgan_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A machine with no ffmpeg on PATH and no imageio-ffmpeg, whatever this one has.
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    assert find_ffmpeg() is None
    out = tmp_path / "walk"
    argv = ["--data", str(dcgan_run), "--out", str(out), "--points", "2", "--frames-per-step", "2"]
    assert main([*argv, *ONE_THREAD]) == 0
    assert "no MP4 encoder" in capsys.readouterr().out and (out / "walk.gif").is_file()
    assert main([*argv, "--video", "mp4"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--video gif" in err


def test_the_walk_reads_the_generator_file_alone(dcgan_run: Path, tmp_path: Path) -> None:
    """What a spec's `files: {/files/generator.pt: ./runs/<job>/generator.pt}` gives the node:
    one small file, no checkpoints, no run folder."""
    alone = tmp_path / "files"
    alone.mkdir()
    shutil.copy(dcgan_run / "generator.pt", alone / "generator.pt")
    out = tmp_path / "walk"
    argv = ["--data", str(tmp_path / "empty"), "--out", str(out), "--video", "gif"]
    argv += ["--checkpoint", str(alone / "generator.pt"), "--points", "2", "--frames-per-step", "2"]
    assert main([*argv, *ONE_THREAD]) == 0
    state = load_checkpoint(latest_checkpoint(dcgan_run))
    generator = Generator(16, 8, 64)
    generator.load_state_dict(state["models"]["generator"])
    first = torch.randn(2, 16, generator=torch.Generator().manual_seed(0))[:1]
    with torch.no_grad():
        expected = generator.eval()(first)[0].add(1).div(2).clamp(0, 1)
    expected_pixels = expected.mul(255).round().permute(1, 2, 0).numpy().astype(np.int16)
    assert np.abs(frame_array(out / "frames" / "frame-00000.png") - expected_pixels).max() <= 1


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
        (["--data", "{tmp}", "--out", "{tmp}/o", "--size", "4"], "--size"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--fps", "0"], "--fps"),
        (["--data", "{tmp}", "--out", "{tmp}/o", "--fps", "9", "--frame-ms", "50"], "--frame-ms"),
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
