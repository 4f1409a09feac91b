"""Load the generator, walk, and write frames/frame-NNNNN.png, walk.gif and
contact-sheet.png into --out."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from PIL import Image

from jobs.common.checkpoint import latest_checkpoint, load_checkpoint
from jobs.common.device import select_device
from jobs.common.errors import DataError
from jobs.common.images import save_image_grid
from jobs.common.signals import StopFlag
from jobs.dcgan.data import to_unit
from jobs.dcgan.model import Generator
from jobs.dcgan.sampling import generate
from jobs.latent_walk.slerp import walk_path
from jobs.latent_walk.synthetic import train_small_dcgan

FRAMES_DIR = "frames"
GIF_NAME = "walk.gif"
SHEET_NAME = "contact-sheet.png"


def load_generator(path: Path, device: torch.device) -> Generator:
    """The generator of a jobs.dcgan checkpoint, in eval mode (its BatchNorm statistics
    were calibrated when the checkpoint was saved)."""
    try:
        state = load_checkpoint(path)
    except Exception as exc:  # any unpickling/IO failure means "not usable"
        raise DataError(f"{path}: not a readable checkpoint ({exc.__class__.__name__})") from None
    models, saved = state.get("models", {}), state.get("args", {})
    if "generator" not in models or not all(k in saved for k in ("nz", "ngf", "image_size")):
        raise DataError(
            f"{path}: not a dcgan checkpoint (no generator); pass a ckpt-*.pt written by "
            "python -m jobs.dcgan"
        )
    generator = Generator(saved["nz"], saved["ngf"], saved["image_size"])
    generator.load_state_dict(models["generator"])
    return generator.to(device).eval()


def latent_points(count: int, nz: int, seed: int) -> torch.Tensor:
    """(count, nz) N(0, I) points, a pure function of (count, nz, seed)."""
    return torch.randn(count, nz, generator=torch.Generator().manual_seed(seed))


def to_pil(picture: torch.Tensor) -> Image.Image:
    """(3, S, S) float in [0, 1] -> RGB image."""
    array = picture.mul(255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return Image.fromarray(array, "RGB")


def run(args: argparse.Namespace, checkpoint: Path | None, stop: StopFlag) -> int:
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
        checkpoint = latest_checkpoint(folder)
        if checkpoint is None:  # cannot happen after a completed run; be explicit anyway
            raise DataError(f"{folder}: training wrote no checkpoint")

    started = time.perf_counter()
    generator = load_generator(checkpoint, device)
    path = walk_path(latent_points(args.points, generator.nz, args.seed), args.frames_per_step)
    frames = to_unit(generate(generator, path.to(device))).cpu()
    write_outputs(frames, args.out, args.frames_per_step, args.frame_ms)
    print(
        f"latent_walk: {checkpoint}: {len(frames)} frames ({args.points} points, "
        f"{args.frames_per_step} per step) -> {args.out / GIF_NAME}, {args.out / SHEET_NAME}, "
        f"{args.out / FRAMES_DIR}/ in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return 0


def write_outputs(frames: torch.Tensor, out: Path, frames_per_step: int, frame_ms: int) -> None:
    folder = out / FRAMES_DIR
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("frame-*.png"):  # a longer earlier walk must not leave extras
        old.unlink()
    pictures = [to_pil(frame) for frame in frames]
    for index, picture in enumerate(pictures):
        picture.save(folder / f"frame-{index:05d}.png")
    # Pillow merges a frame identical to the one before (adding up the durations), so a
    # walk that stands still for a frame has fewer GIF frames than PNG frames.
    temp = out / f".{GIF_NAME}.tmp"
    pictures[0].save(
        temp, format="GIF", save_all=True, append_images=pictures[1:], duration=frame_ms, loop=0
    )
    temp.replace(out / GIF_NAME)
    # One row per step between points, so each row reads as one leg of the walk.
    save_image_grid(frames, out / SHEET_NAME, nrow=frames_per_step)
