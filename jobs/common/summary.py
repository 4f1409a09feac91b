"""The run's last word: final and best metrics, where they were reached, and a verdict when
training clearly failed, printed as one screen in the log and written to
``<out>/summary.json`` so the home side can show it without reading the whole metrics file."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jobs.common.confusion import ClassReport

SUMMARY_FILE = "summary.json"
# A loss this many times its first finite value has diverged, even if it is still finite.
DIVERGED_FACTOR = 100.0
# A discriminator loss below this for the last rows means it wins outright: the GAN collapsed.
D_LOSS_COLLAPSED = 0.05
# D's mean output on generated pictures below this for the last rows: it spots every fake (the
# test that still holds when label smoothing keeps D's loss well above D_LOSS_COLLAPSED).
D_FAKE_COLLAPSED = 0.03
# A GAN's quality figure (lower is better) this many times its best: the samples got worse.
QUALITY_WORSE_FACTOR = 3.0
# A classifier must beat chance by this margin (absolute accuracy) to count as having learnt.
CHANCE_MARGIN = 0.02
# Up to this many classes the printed summary lists every class; past it, the worst few.
LISTED_CLASSES = 20
WORST_LISTED = 10


def _finite(value: Any) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


def _best(rows: Sequence[dict[str, Any]], field: str, *, highest: bool) -> dict[str, Any] | None:
    scored = [(row, _finite(row.get(field))) for row in rows]
    valid = [(row, value) for row, value in scored if value is not None]
    if not valid:
        return None
    row, value = (max if highest else min)(valid, key=lambda pair: pair[1])
    return {"value": value, "epoch": row.get("epoch"), "step": row.get("step")}


def _loss_verdict(rows: Sequence[dict[str, Any]], field: str) -> str | None:
    """NaN (written as null by the metrics writer) or diverged loss, judged on the last row."""
    present = [row for row in rows if field in row]
    if not present:
        return None
    last = present[-1].get(field)
    if last is None or _finite(last) is None:
        return f"{field} is NaN or infinite at step {present[-1].get('step')}: training diverged"
    first = next((_finite(row.get(field)) for row in present if _finite(row.get(field))), None)
    if first and last > DIVERGED_FACTOR * first:
        return f"{field} grew from {first:.3g} to {last:.3g}: training diverged"
    return None


def classifier_summary(
    rows: Sequence[dict[str, Any]],
    *,
    workload: str,
    num_classes: int,
    per_class: ClassReport | None = None,
) -> dict[str, Any]:
    """From metrics rows (split "train"/"val") and the last epoch's per-class report; the
    verdict names the first failure found."""
    val = [row for row in rows if row.get("split") == "val"]
    train = [row for row in rows if row.get("split") == "train"]
    judged = val or train
    chance = 1.0 / num_classes if num_classes > 0 else 0.0
    verdict = _loss_verdict(train, "loss") or _loss_verdict(val, "loss")
    last_acc = _finite(judged[-1].get("accuracy")) if judged else None
    if verdict is None and last_acc is not None and last_acc <= chance + CHANCE_MARGIN:
        verdict = (
            f"accuracy {last_acc:.1%} is at or below chance ({chance:.1%} for {num_classes} "
            "classes): the model did not learn (labels shuffled, data too small, LR too high, "
            "or no pretrained weights)"
        )
    return {
        "workload": workload,
        "kind": "classifier",
        "num_classes": num_classes,
        "chance_accuracy": chance,
        "final": {k: judged[-1].get(k) for k in ("epoch", "step", "loss", "accuracy")}
        if judged
        else None,
        "best_accuracy": _best(judged, "accuracy", highest=True),
        "best_loss": _best(judged, "loss", highest=False),
        **_per_class_fields(per_class),
        "verdict": verdict,
    }


def _per_class_fields(report: ClassReport | None) -> dict[str, Any]:
    """Validation accuracy and sample count per class name, in class-id order."""
    if report is None:
        return {}
    classes = report.classes
    return {
        "per_class_epoch": report.epoch,
        "per_class_accuracy": {item.name: item.accuracy for item in classes},
        "per_class_count": {item.name: item.count for item in classes},
    }


def per_class_lines(summary: dict[str, Any]) -> list[str]:
    """Each class's validation accuracy, one per line (the worst few when there are many),
    so a study that re-weights classes sees which one paid."""
    accuracy: dict[str, float | None] = summary.get("per_class_accuracy") or {}
    if not accuracy:
        return []
    counts: dict[str, int] = summary.get("per_class_count") or {}
    names = list(accuracy)
    heading = f"per-class val accuracy (epoch {summary.get('per_class_epoch')})"
    if len(names) > LISTED_CLASSES:
        names = sorted(names, key=lambda name: (accuracy[name] is None, accuracy[name] or 0.0))
        names = names[:WORST_LISTED]
        heading += f", the {WORST_LISTED} lowest of {len(accuracy)} (all in per_class.csv)"
    width = max(len(name) for name in names)
    lines = [heading + ":"]
    for name in names:
        value = accuracy[name]
        shown = "no samples" if value is None else f"{value:6.1%} of {counts.get(name, '?')}"
        lines.append(f"  {name:<{width}}  {shown}")
    return lines


def gan_summary(
    rows: Sequence[dict[str, Any]],
    *,
    workload: str,
    d_field: str = "loss_d",
    g_field: str = "loss_g",
    diversity_field: str | None = None,
    min_diversity: float = 0.02,
    quality_field: str | None = None,
    fake_field: str | None = None,
) -> dict[str, Any]:
    """A GAN collapsed when the discriminator wins every batch (its loss sits near 0, or its
    mean output on fakes, `fake_field`, does), when the samples of a fixed noise batch are all
    alike (diversity near 0), or when the quality figure ends far worse than its best."""
    verdict = _loss_verdict(rows, d_field) or _loss_verdict(rows, g_field)
    tail = rows[-max(1, len(rows) // 5) :] if rows else []
    d_tail = [_finite(row.get(d_field)) for row in tail]
    d_tail_ok = [value for value in d_tail if value is not None]
    if verdict is None and d_tail_ok and max(d_tail_ok) < D_LOSS_COLLAPSED:
        verdict = (
            f"discriminator loss stayed below {D_LOSS_COLLAPSED} (last {d_tail_ok[-1]:.3g}): "
            "the GAN collapsed, the generator's samples are not learning"
        )
    fake_tail = [_finite(row.get(fake_field)) for row in tail] if fake_field else []
    fake_ok = [value for value in fake_tail if value is not None]
    if verdict is None and fake_ok and max(fake_ok) < D_FAKE_COLLAPSED:
        verdict = (
            f"the discriminator rated every generated picture below {D_FAKE_COLLAPSED} "
            f"({fake_field} last {fake_ok[-1]:.3g}): it wins every batch, the GAN collapsed "
            "and its samples are not learning"
        )
    if verdict is None and diversity_field and rows:
        last_div = _finite(rows[-1].get(diversity_field))
        if last_div is not None and last_div < min_diversity:
            verdict = (
                f"sample diversity {last_div:.3g} is near 0: mode collapse, the generator makes "
                "the same picture for every noise vector"
            )
    best_quality = _best(rows, quality_field, highest=False) if quality_field else None
    last_quality = _finite(rows[-1].get(quality_field)) if quality_field and rows else None
    if (
        verdict is None
        and best_quality is not None
        and last_quality is not None
        and best_quality["value"] > 0
        and last_quality > QUALITY_WORSE_FACTOR * best_quality["value"]
    ):
        verdict = (
            f"{quality_field} {last_quality:.3g} is over {QUALITY_WORSE_FACTOR:g}x its best "
            f"({best_quality['value']:.3g} at epoch {best_quality['epoch']}): the samples got "
            "worse, the discriminator is probably winning; train fewer epochs or augment more"
        )
    last = rows[-1] if rows else {}
    extra = tuple(field for field in (diversity_field, quality_field) if field)
    fields = ("epoch", "step", d_field, g_field, *extra)
    return {
        "workload": workload,
        "kind": "gan",
        "final": {k: last.get(k) for k in fields} if rows else None,
        "best_diversity": _best(rows, diversity_field, highest=True) if diversity_field else None,
        # The quality figure (an FID-style distance): lower is better.
        "best_quality": best_quality,
        "verdict": verdict,
    }


def render(summary: dict[str, Any]) -> str:
    """One screen of plain text for the log."""
    lines = [f"== {summary['workload']} summary =="]
    final = summary.get("final") or {}
    if final:
        lines.append("final: " + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items()))
    for key in ("best_accuracy", "best_loss", "best_diversity", "best_quality"):
        best = summary.get(key)
        if best:
            name = key.removeprefix("best_")
            lines.append(
                f"best {name}: {_fmt(best['value'])} at epoch {best['epoch']}, step {best['step']}"
            )
    lines.extend(per_class_lines(summary))
    verdict = summary.get("verdict")
    lines.append(f"WARNING: {verdict}" if verdict else "verdict: no sign of failed training")
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def write_summary(out_dir: Path, summary: dict[str, Any]) -> Path:
    """Writes summary.json (atomically: a pull mid-write sees the old or the new) and prints."""
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / SUMMARY_FILE
    temp = path.with_suffix(".tmp")
    temp.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    temp.replace(path)
    print(render(summary), flush=True)
    return path


def read_summary(out_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out_dir / SUMMARY_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
