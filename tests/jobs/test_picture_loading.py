"""Picture folders as people have them (jobs/common/picture_*.py, images.py): unreadable,
hidden and odd files among the good ones. The dcgan and transfer runs on such folders are in
test_dcgan.py and test_transfer.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from jobs.common import picture_decode
from jobs.common.errors import DataError
from jobs.common.images import load_images
from jobs.common.picture_decode import BadPicture, decode_picture
from jobs.common.picture_files import scan_pictures
from jobs.common.picture_report import SkipReport


def pixel(picture: np.ndarray | torch.Tensor, y: int, x: int) -> tuple[int, ...]:
    """RGB at (y, x) of an (S, S, 3) array or a (3, S, S) tensor."""
    if isinstance(picture, torch.Tensor):
        return tuple(picture[:, y, x].tolist())
    return tuple(int(v) for v in picture[y, x])


def near(actual: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected, strict=True))


def test_scan_skips_hidden_entries_by_name_and_keeps_the_rest(tmp_path: Path, messy) -> None:
    root = tmp_path / ".pictures"  # a root inside a dot-folder is read as usual
    good = messy.good_pictures(root / "album", 3)
    messy.bad_files(root)
    (root / "tracklist.txt").write_text("1. intro\n")
    scan = scan_pictures(root)
    assert scan.pictures == sorted(
        [*good, root / "broken.jpg", root / "empty.png", root / "notes.jpg"]
    )
    hidden = {entry.path.relative_to(root).as_posix(): entry for entry in scan.skipped}
    assert sorted(hidden) == sorted(["._cover.jpg", ".DS_Store", "__MACOSX", ".ipynb_checkpoints"])
    assert hidden["__MACOSX"].folder and not hidden[".DS_Store"].folder
    assert not any(entry.bad for entry in scan.skipped)
    assert scan.others == [root / "tracklist.txt"]


def test_each_picture_file_is_opened_once_and_hidden_ones_never(
    tmp_path: Path, messy, monkeypatch: pytest.MonkeyPatch
) -> None:
    messy.good_pictures(tmp_path, 4)
    messy.bad_files(tmp_path)
    messy.odd_pictures(tmp_path)
    opened: list[str] = []
    real_open = Image.open

    def recording_open(path: Path, *args: object, **kwargs: object) -> Image.Image:
        opened.append(Path(path).name)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(picture_decode.Image, "open", recording_open)
    scan = scan_pictures(tmp_path)
    loaded = load_images(scan.pictures, 16)
    assert sorted(opened) == sorted(path.name for path in scan.pictures)
    assert len(opened) == 4 + 3 + 7
    assert not any(name.startswith(".") or "checkpoint" in name for name in opened)
    assert len(loaded.kept) == 11 and loaded.images.shape == (11, 3, 16, 16)


def test_unreadable_files_fail_with_their_reason(tmp_path: Path, messy) -> None:
    expected = messy.bad_files(tmp_path)
    for name in ("broken.jpg", "empty.png", "notes.jpg"):
        with pytest.raises(BadPicture) as caught:
            decode_picture(tmp_path / name, 16)
        assert caught.value.reason == expected[name]
    # Truncation is found by decoding, not guessed: Pillow does open the cut file lazily.
    with Image.open(tmp_path / "broken.jpg") as lazily:
        assert lazily.size == (96, 64)
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    with pytest.raises(BadPicture, match="missing"):
        decode_picture(tmp_path / "gone.jpg", 16)


def test_loading_keeps_good_pictures_in_order_and_lists_the_bad(tmp_path: Path, messy) -> None:
    good = messy.good_pictures(tmp_path, 3)
    messy.truncated_jpeg(tmp_path / "cover-001b.jpg")
    paths = [good[0], good[1], tmp_path / "cover-001b.jpg", good[2]]
    loaded = load_images(paths, 24)
    assert loaded.kept == [0, 1, 3]
    assert [(entry.path, entry.reason, entry.bad) for entry in loaded.failed] == [
        (tmp_path / "cover-001b.jpg", "truncated", True)
    ]
    for row, index in enumerate(loaded.kept):
        expected = torch.tensor(decode_picture(paths[index], 24)).permute(2, 0, 1)
        assert torch.equal(loaded.images[row], expected)
    assert loaded.images.dtype == torch.uint8 and loaded.images.is_contiguous()


def test_odd_pictures_come_out_upright_and_in_their_colours(tmp_path: Path, messy) -> None:
    paths = messy.odd_pictures(tmp_path)
    size = 32
    transparent = decode_picture(paths["transparent"], size)
    assert pixel(transparent, 16, 4) == (255, 255, 255)  # on white, not black
    assert near(pixel(transparent, 16, 28), (220, 30, 30))
    # Upright: red on top, blue below; stored as is it would be red left, blue right.
    rotated = decode_picture(paths["rotated"], size)
    assert near(pixel(rotated, 2, 16), (230, 20, 20), 40)
    assert near(pixel(rotated, 29, 16), (20, 20, 230), 40)
    assert near(pixel(rotated, 16, 2), pixel(rotated, 16, 29), 60)  # same colour across
    assert pixel(decode_picture(paths["grey"], size), 5, 5) == (90, 90, 90)
    assert near(pixel(decode_picture(paths["palette"], size), 5, 5), (20, 160, 40))
    assert pixel(decode_picture(paths["sixteen"], size), 5, 5) == (128, 128, 128)
    assert near(pixel(decode_picture(paths["cmyk"], size), 5, 5), (255, 0, 0), 20)
    assert pixel(decode_picture(paths["animated"], size), 5, 5) == (255, 0, 0)


@pytest.mark.parametrize(
    ("mode", "make"),
    [
        ("LA", lambda: Image.new("LA", (8, 8), (0, 0))),
        ("PA", lambda: Image.new("RGBA", (8, 8), (0, 0, 0, 0)).convert("PA")),
        ("P", lambda: _palette_with_transparent_black()),
        ("L", lambda: _grey_with_transparent_black()),
        ("1", lambda: Image.new("1", (8, 8), 1)),
        ("RGBa", lambda: Image.new("RGBA", (8, 8), (0, 0, 0, 0)).convert("RGBa")),
    ],
)
def test_every_transparent_or_odd_mode_becomes_rgb_without_black(mode: str, make) -> None:
    image = make()
    assert image.mode == mode
    rgb = picture_decode.to_rgb(image)
    assert rgb.mode == "RGB"
    assert np.asarray(rgb).min() == 255  # transparent -> white background; 1-bit 1 -> white


def _palette_with_transparent_black() -> Image.Image:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 255, 255, 255])
    image.info["transparency"] = 0
    return image


def _grey_with_transparent_black() -> Image.Image:
    image = Image.new("L", (8, 8), 0)
    image.info["transparency"] = 0
    return image


def test_a_decompression_bomb_is_a_bad_picture_not_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Image.new("RGB", (10, 10), (1, 2, 3)).save(tmp_path / "small.png")
    Image.new("RGB", (100, 100), (1, 2, 3)).save(tmp_path / "huge.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # errors above 2000 pixels
    loaded = load_images([tmp_path / "small.png", tmp_path / "huge.png"], 8)
    assert loaded.kept == [0]
    assert loaded.failed[0].reason.startswith("too large")


def test_report_line_and_checks(tmp_path: Path, messy) -> None:
    messy.good_pictures(tmp_path, 4)
    messy.bad_files(tmp_path)
    scan = scan_pictures(tmp_path)
    report = SkipReport(tmp_path)
    report.add_scan(scan)
    report.add_failed(load_images(scan.pictures, 8).failed)
    line = report.warning("--data x")
    assert line is not None and "\n" not in line
    # 4 good + 3 bad picture files, and 4 hidden entries; unreadable ones named first.
    assert line.startswith(
        "warning: --data x: skipped 7 of 11 files (3 unreadable, 4 hidden): "
        "broken.jpg (truncated), empty.png (empty file), notes.jpg (not an image), "
        ".DS_Store (hidden), ._cover.jpg (hidden) and 2 more"
    ), line
    report.check("--data x", 0.5, "hint")  # 3 of 7 is under half
    with pytest.raises(DataError, match=r"3 of 7 picture files \(43%\) .* --max-bad-fraction 0\.4"):
        report.check("--data x", 0.4, "hint")


def test_nothing_usable_names_what_the_folder_holds(tmp_path: Path, messy) -> None:
    messy.bad_files(tmp_path)
    (tmp_path / "IMG_0001.heic").write_bytes(b"\x00\x00\x00\x18ftypheic")
    scan = scan_pictures(tmp_path)
    report = SkipReport(tmp_path)
    report.add_scan(scan)
    report.add_failed(load_images(scan.pictures, 8).failed)
    with pytest.raises(DataError) as caught:
        report.check("--data x", 1.0, "put pictures there")
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("--data x: no usable pictures: all 3 picture files are unreadable")
    assert "broken.jpg (truncated)" in message and "1 .heic" in message
    assert "4 hidden" in message and message.endswith("put pictures there")


def test_no_bad_files_means_no_warning(tmp_path: Path, messy) -> None:
    messy.good_pictures(tmp_path, 2)
    scan = scan_pictures(tmp_path)
    report = SkipReport(tmp_path)
    report.add_scan(scan)
    report.add_failed(load_images(scan.pictures, 8).failed)
    assert report.warning("--data x") is None
    report.check("--data x", 0.0, "hint")  # 0 = no unreadable file tolerated: there is none
