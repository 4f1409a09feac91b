"""Load the generator, walk, and write frames/frame-NNNNN.png, walk.mp4 (or walk.gif) and
contact-sheet.png into --out."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from jobs.common.checkpoint import load_checkpoint
from jobs.common.device import select_device
from jobs.common.errors import DataError
from jobs.common.images import save_image_grid
from jobs.common.signals import StopFlag
from jobs.dcgan.data import to_unit
from jobs.dcgan.export import generator_parts
from jobs.dcgan.model import Generator
from jobs.dcgan.sampling import generate
from jobs.latent_walk.find import newest_checkpoint
from jobs.latent_walk.slerp import walk_path
from jobs.latent_walk.synthetic import train_small_dcgan
from jobs.latent_walk.video import write_gif, write_mp4

FRAMES_DIR = "frames"
SHEET_NAME = "contact-sheet.png"


@dataclass(frozen=True)
class VideoSettings:
    fps: float
    size: int | None  # None: the generator's own size
    ffmpeg: str | None  # None: write a GIF


def load_generator(path: Path, device: torch.device) -> Generator:
    """The generator of a jobs.dcgan generator.pt or full checkpoint, in eval mode (its
    BatchNorm statistics were calibrated when the file was saved)."""
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # any unpickling/IO failure means "not usable"
        raise DataError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    parts = generator_parts(state) if isinstance(state, dict) else None
    if parts is None:
        raise DataError(
            f"{path}: not a dcgan checkpoint (no generator); pass a generator.pt or ckpt-*.pt "
            "written by python -m jobs.dcgan"
        )
    saved, weights = parts
    generator = Generator(saved["nz"], saved["ngf"], saved["image_size"])
    generator.load_state_dict(weights)
    return generator.to(device).eval()


def latent_points(count: int, nz: int, seed: int) -> torch.Tensor:
    """(count, nz) N(0, I) points, a pure function of (count, nz, seed)."""
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def to_pil(picture: torch.Tensor, size: int | None = None) -> Image.Image:
    """(3, S, S) float in [0, 1] -> RGB image, resampled to size x size when given (Lanczos:
    sharp when enlarging, no aliasing when shrinking)."""
    array = picture.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    image = Image.fromarray(array, "RGB")
    if size is not None and size != image.width:
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    return image


def run(
    args: argparse.Namespace, checkpoint: Path | None, stop: StopFlag, video: VideoSettings
) -> int:
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    if checkpoint is None:  # cli.locate_checkpoint allows this only with --synthetic-steps
        folder = train_small_dcgan(args, stop)
        # The training sets the flag itself when it reaches --synthetic-steps: only another
        # reason (SIGTERM) means the walk must wait for a rerun.
        if stop and stop.reason != "--max-steps":
            print(f"stopped by {stop.reason} while training; rerun to continue", flush=True)
            return 0
        checkpoint = newest_checkpoint(folder)
        if checkpoint is None:  # cannot happen after a completed run; be explicit anyway
            raise DataError(f"{folder}: training wrote no checkpoint")

    started = time.perf_counter()
    generator = load_generator(checkpoint, device)
    path = walk_path(latent_points(args.points, generator.nz, args.seed), args.frames_per_step)
    frames = to_unit(generate(generator, path.to(device))).cpu()
    written = write_outputs(frames, args.out, args.frames_per_step, video)
    print(
        f"latent_walk: {checkpoint}: {len(frames)} frames ({args.points} points, "
        f"{args.frames_per_step} per step) of {video.size or frames.shape[-1]} px at "
        f"{video.fps:g} fps -> {written}, {args.out / SHEET_NAME}, {args.out / FRAMES_DIR}/ "
        f"in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return 0


def write_outputs(
    frames: torch.Tensor, out: Path, frames_per_step: int, video: VideoSettings
) -> Path:
    """The PNG frames and the video (at video.size), and the contact sheet (at the
    generator's own size: one row per leg would be metres wide at 512 px). Returns the
    video's path."""
    folder = out / FRAMES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("frame-*.png"):  # a longer earlier walk must not leave extras
        old.unlink()
    pictures = [to_pil(frame, video.size) for frame in frames]
    for index, picture in enumerate(pictures):
        picture.save(folder / f"frame-{index:05d}.png")
    written = None
    if video.ffmpeg is not None:
        try:
            written = write_mp4(pictures, out, video.fps, video.ffmpeg)
        except RuntimeError as exc:
            print(f"latent_walk: MP4 failed ({exc}); writing walk.gif instead", flush=True)
    if written is None:
        written = write_gif(pictures, out, video.fps)
    # One row per step between points, so each row reads as one leg of the walk.
    save_image_grid(frames, out / SHEET_NAME, nrow=frames_per_step)
    return written
