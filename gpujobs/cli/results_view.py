"""What `gpujobs results JOB` shows: the run summary and the paths of the pictures that came
home (nothing is opened). --json gives the Results record as JSON."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gpujobs.api import Results


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
        verdict = summary.get("verdict")
        lines.append(f"WARNING: {verdict}" if verdict else "verdict: no sign of failed training")
    lines.append(f"pictures ({len(results.pictures)}):")
    lines.extend(f"  {path}" for path in results.pictures)
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
