"""What `gpujobs results JOB` shows: the run summary and the paths of the pictures that came
home (nothing is opened). --json gives the Results record as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpujobs.api import Results

_PER_CLASS_SHOWN = 10


def results_json(results: Results) -> dict[str, Any]:
    return results.as_json()


def results_text(results: Results) -> str:
    lines = [f"{results.job_id}: {results.runs_dir}"]
    summary = results.summary
    if summary is None:
        lines.append("no summary.json yet (the workload writes it when training ends)")
    else:
        final = summary.get("final") or {}
        if final:
            lines.append("final: " + ", ".join(f"{k} {_fmt(v)}" for k, v in final.items()))
        for key in ("best_accuracy", "best_loss", "best_diversity", "best_quality"):
            best = summary.get(key)
            if best:
                lines.append(
                    f"best {key.removeprefix('best_')}: {_fmt(best['value'])} at epoch "
                    f"{best.get('epoch')}, step {best.get('step')}"
                )
        lines.extend(_per_class(summary))
        verdict = summary.get("verdict")
        lines.append(f"WARNING: {verdict}" if verdict else "verdict: no sign of failed training")
    lines.append(f"pictures ({len(results.pictures)}):")
    lines.extend(f"  {path}" for path in results.pictures)
    return "\n".join(lines)


def _per_class(summary: dict[str, Any]) -> list[str]:
    """A classifier's validation accuracy per class, lowest first (all of them are in the run's
    per_class.csv): the class a re-weighting or a skewed dataset hurt comes first."""
    accuracy = summary.get("per_class_accuracy")
    if not isinstance(accuracy, dict) or not accuracy:
        return []
    scored = sorted(
        ((name, value) for name, value in accuracy.items() if isinstance(value, int | float)),
        key=lambda pair: pair[1],
    )
    shown = ", ".join(f"{name} {value:.1%}" for name, value in scored[:_PER_CLASS_SHOWN])
    more = len(scored) - _PER_CLASS_SHOWN
    return [f"per-class accuracy, lowest first: {shown}" + (f" (+{more} more)" if more > 0 else "")]


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
