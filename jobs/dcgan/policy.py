"""The augmentation policy flag (``--augment color,translation,cutout``), read without torch so
that a bad value fails in milliseconds; augment.py holds the transforms themselves."""

from __future__ import annotations

TRANSFORM_NAMES = ("color", "translation", "cutout")
DEFAULT_POLICY = "color,translation,cutout"
NO_AUGMENT = "none"


def parse_policy(text: str) -> tuple[str, ...]:
    """``color,translation,cutout`` -> its names in order; ``none`` -> (). Raises ValueError
    naming the unknown ones."""
    names = tuple(part.strip() for part in text.split(",") if part.strip())
    if names == (NO_AUGMENT,):
        return ()
    unknown = [name for name in names if name not in TRANSFORM_NAMES]
    if unknown or not names:
        what = ", ".join(unknown) or repr(text)
        known = ", ".join(TRANSFORM_NAMES)
        raise ValueError(f"unknown augmentation {what}; use {known} (comma-separated) or none")
    return names


def policy_text(text: str) -> str:
    """The flag's value written one way (``color, cutout`` -> ``color,cutout``), so a resumed
    run compares it with the checkpoint's by text."""
    return ",".join(parse_policy(text)) or NO_AUGMENT
