"""Where a chart's axis puts its tick marks and what they say: round values in 1-2-5 steps that
cover the data (as matplotlib's and R's axes choose them), and labels with just enough digits
to tell neighbouring ticks apart. Plain arithmetic, no drawing, so it is tested on its own."""

from __future__ import annotations

import math
from dataclasses import dataclass

# A step is one of these times a power of ten: round numbers a reader adds up at a glance.
_NICE_STEPS = (1.0, 2.0, 5.0, 10.0)
# Past these magnitudes fixed-point labels grow long (0.000010, 2500000): use 1e-05 style.
_FIXED_BELOW, _FIXED_FROM = 1e5, 1e-3


@dataclass(frozen=True)
class Axis:
    """An axis's range (the outer ticks, so the data fills it) and its ticks with labels.
    `log`: the ticks are powers of ten and positions are read on a log10 scale."""

    low: float
    high: float
    ticks: tuple[float, ...]
    labels: tuple[str, ...]
    log: bool = False

    def fraction(self, value: float) -> float:
        """Where `value` falls between low (0.0) and high (1.0)."""
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(value)
        else:
            low, high = self.low, self.high
        return (value - low) / ((high - low) or 1.0)


def nice_step(span: float, count: int) -> float:
    """The smallest 1-2-5 step that cuts `span` into at most `count` intervals."""
    raw = span / max(count, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    for factor in _NICE_STEPS:
        if factor * power >= raw * (1 - 1e-9):
            return factor * power
    return 10.0 * power  # unreachable: 10 x power >= raw by the floor above


def linear_axis(low: float, high: float, *, count: int = 8, integer: bool = False) -> Axis:
    """Ticks at multiples of a 1-2-5 step from at or below `low` to at or above `high`, at
    most `count` intervals; `integer` keeps the step whole (steps, epochs)."""
    if not (math.isfinite(low) and math.isfinite(high)):
        raise ValueError(f"axis limits must be finite, got {low}, {high}")
    low, high = min(low, high), max(low, high)
    if high == low:  # one value: a small band around it, so it sits mid-axis
        pad = abs(low) * 0.1 or 1.0
        low, high = low - pad, high + pad
    step = nice_step(high - low, count)
    if integer:
        step = max(1.0, round(step))
    first = math.floor(low / step + 1e-9)
    last = math.ceil(high / step - 1e-9)
    ticks = tuple(_clean(index * step) for index in range(first, last + 1))
    return Axis(ticks[0], ticks[-1], ticks, tick_labels(ticks, step))


def log_axis(low: float, high: float) -> Axis:
    """Ticks at the powers of ten around [low, high] (both > 0): for a learning rate that a
    schedule moves over decades, where a linear axis shows only its largest values."""
    if low <= 0 or high <= 0:
        raise ValueError(f"a log axis needs positive limits, got {low}, {high}")
    first = math.floor(math.log10(min(low, high)) + 1e-9)
    last = math.ceil(math.log10(max(low, high)) - 1e-9)
    last = max(last, first + 1)
    ticks = tuple(10.0**power for power in range(first, last + 1))
    return Axis(
        ticks[0],
        ticks[-1],
        ticks,
        tuple(f"1e{power}" for power in range(first, last + 1)),
        log=True,
    )


def value_axis(values: list[float], *, count: int = 8, integer: bool = False) -> Axis:
    """The axis for `values`: logarithmic when they are positive and span more than two
    decades (a one-cycle or step schedule's learning rate), linear otherwise."""
    low, high = min(values), max(values)
    if not integer and low > 0 and high / low > 100:
        return log_axis(low, high)
    return linear_axis(low, high, count=count, integer=integer)


def tick_labels(ticks: tuple[float, ...], step: float) -> tuple[str, ...]:
    """Labels with as many decimals as the step needs (0.25 steps: 0.00, 0.25, ...), and
    1e-05 style where fixed-point would be long."""
    biggest = max(abs(tick) for tick in ticks)
    if biggest >= _FIXED_BELOW or (0 < biggest < _FIXED_FROM):
        # Significant digits down to the step's place: 2.5e-04 beside 5.0e-04.
        digits = max(0, math.floor(math.log10(biggest)) - math.floor(math.log10(step) + 1e-9))
        return tuple("0" if tick == 0 else f"{tick:.{digits}e}" for tick in ticks)
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10**decimals % 1 > 1e-6:  # 2.5 steps after rounding: one more place
        decimals += 1
    return tuple(f"{tick:.{decimals}f}" for tick in ticks)


def _clean(value: float) -> float:
    """index x step in floating point leaves 0.30000000000000004 and -0.0: round them off."""
    cleaned = float(f"{value:.12g}")
    return 0.0 if cleaned == 0 else cleaned
