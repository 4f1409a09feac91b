"""The `dev:` section of a job spec (`gpujobs dev`): JupyterLab instead of a workload. Apart from
spec.py, which imports it, so the session's command is written in one place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class DevSession(_Strict):
    """`gpujobs dev`: JupyterLab on the node, forwarded here, stopped when idle."""

    port: int = Field(8888, ge=1024, le=65535, description="JupyterLab's port on the node")
    idle_minutes: float = Field(
        30, gt=0, le=7 * 24 * 60, description="stop after this long without kernel or GPU use"
    )
    gpu_idle_percent: float = Field(
        10, ge=0, le=100, description="GPU use below this counts as idle"
    )


def dev_command(port: int) -> str:
    """JupyterLab in the job's checkpoint folder, which comes home at the end: the code folder
    is copied in first (unless that folder holds it), so notebooks and outputs come home too.
    Its token is in JUPYTER_TOKEN (the job's 0600 env file), never on the command line."""
    return (
        'mkdir -p "$GPUJOBS_CKPT_DIR" && case "$GPUJOBS_CKPT_DIR" in "$PWD"/*) ;; '
        '*) cp -R . "$GPUJOBS_CKPT_DIR"/ ;; esac && cd "$GPUJOBS_CKPT_DIR" && '
        f"exec python3 -m jupyterlab --no-browser --ServerApp.ip=127.0.0.1 "
        f"--ServerApp.port={port} --ServerApp.port_retries=0 --ServerApp.root_dir=. "
        # Cloud images and containers often log in as root; the server is on loopback only.
        "--ServerApp.allow_remote_access=False --ServerApp.allow_root=True"
    )
