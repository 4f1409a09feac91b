"""Synthetic digits: deterministic per seed, balanced, MNIST-shaped."""

from __future__ import annotations

import torch

from jobs.mnist_cnn.synthetic import discover_fonts, synthesize_digits


def test_deterministic_for_a_seed() -> None:
    x1, y1 = synthesize_digits(300, seed=5)
    x2, y2 = synthesize_digits(300, seed=5)
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    x3, _ = synthesize_digits(300, seed=6)
    assert not torch.equal(x1, x3)


def test_balanced_and_shaped() -> None:
    x, y = synthesize_digits(1003, seed=0)
    assert x.shape == (1003, 28, 28) and x.dtype == torch.uint8
    assert y.dtype == torch.int64
    counts = torch.bincount(y, minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == 1003
    # Real ink, not blank canvases: every image has bright pixels.
    assert (x.flatten(1).amax(1) > 100).all()


def test_builtin_font_alone_works() -> None:
    fonts = discover_fonts(roots=())
    assert [label for label, _ in fonts] == ["pillow-default"]
    x, y = synthesize_digits(50, seed=0, fonts=fonts)
    assert x.shape == (50, 28, 28) and torch.bincount(y, minlength=10).min() == 5
