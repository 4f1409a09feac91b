"""The walk as a moving picture: MP4 through ffmpeg when one is at hand (on PATH, or the binary
the imageio-ffmpeg package ships), else an animated GIF. Both written under a temporary name
and renamed, so a pull mid-write never brings home half a file.

GIF stores frame times in hundredths of a second, and viewers show frames shorter than 20 ms
at 100 ms; so a GIF's frame time is 1/fps rounded to 10 ms, and at least 20 ms (50 fps).
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

GIF_NAME = "walk.gif"
MP4_NAME = "walk.mp4"
GIF_MIN_MS = 20
_ENCODE_TIMEOUT_S = 600


def find_ffmpeg() -> str | None:
    """The ffmpeg to encode with: the one on PATH, else imageio-ffmpeg's; None if neither."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the package is there but its binary is not
        return None


def gif_frame_ms(fps: float) -> int:
    """The frame time a GIF can store that is nearest to 1/fps (see module docstring)."""
    return max(GIF_MIN_MS, round(100 / fps) * 10)


def write_gif(frames: Sequence[Image.Image], out: Path, fps: float) -> Path:
    """Looping GIF. Pillow merges a frame identical to the one before (adding up the
    durations), so a walk that stands still for a frame has fewer GIF frames than PNGs."""
    target = out / GIF_NAME
    temp = out / f".{GIF_NAME}.tmp"
    frames[0].save(
        temp,
        format="GIF",
        save_all=True,
        append_images=list(frames[1:]),
        duration=gif_frame_ms(fps),
        loop=0,
    )
    temp.replace(target)
    return target


def write_mp4(frames: Sequence[Image.Image], out: Path, fps: float, ffmpeg: str) -> Path:
    """H.264 in MP4 (yuv420p, which every player reads; odd sizes are padded by one pixel),
    the frames piped to ffmpeg as raw RGB. Raises RuntimeError with ffmpeg's last words."""
    target = out / MP4_NAME
    temp = out / f".{MP4_NAME}.tmp"
    width, height = frames[0].size
    command = [
        ffmpeg, "-y", "-loglevel", "error",
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}", "-r", f"{fps:g}",
        "-i", "-",
        "-vf", "pad=ceil(iw/2)*2:ceil(ih/2)*2",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
        "-f", "mp4", str(temp),
    ]  # fmt: skip
    data = b"".join(frame.convert("RGB").tobytes() for frame in frames)
    try:
        done = subprocess.run(
            command, input=data, capture_output=True, timeout=_ENCODE_TIMEOUT_S, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        temp.unlink(missing_ok=True)
        raise RuntimeError(f"{ffmpeg}: {exc}") from None
    if done.returncode != 0:
        temp.unlink(missing_ok=True)
        last = done.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"{ffmpeg} exited with {done.returncode}: {last[0]}")
    temp.replace(target)
    return target
