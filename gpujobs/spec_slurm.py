"""The `slurm:` section of a job spec: the cluster's login node and how jobs are submitted.

Kept beside spec.py (which references it from JobSpec) so the spec stays one readable page.
Every value here ends up on an `sbatch` command line: each is checked to be one plain word, and
the provider still quotes every one.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Partition, account, QOS and constraint names: Slurm's own are letters, digits and a few
# marks; constraints add its operators (&, |, [ ], *, !). Never a space or a control character.
_NAME = re.compile(r"^[A-Za-z0-9_.:,+=@%-]{1,128}$")
_CONSTRAINT = re.compile(r"^[A-Za-z0-9_.:,&|\[\]*!()-]{1,256}$")
_GRES = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(:[A-Za-z0-9_.-]+)?$")
_OPTION = re.compile(r"^[a-z][a-z0-9-]{0,40}$")
# Options gpujobs sets itself (sbatch_options may not): the job's name, tag, output, shape, time.
RESERVED_OPTIONS = frozenset(
    {
        "job-name", "comment", "output", "error", "input", "chdir", "wrap", "parsable",
        "nodes", "ntasks", "ntasks-per-node", "cpus-per-task", "mem", "gres", "gpus", "time",
        "partition", "account", "qos", "constraint", "array", "dependency", "export",
    }
)  # fmt: skip
OptionValue = str | int | float | bool


class SlurmSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    login: str = Field(
        description="the cluster's login node as you ssh to it: an ~/.ssh/config alias or "
        "user@host[:port]"
    )
    identity_file: str | None = Field(
        None,
        description="private key to log in with (an absolute or ~/ path); default: your ssh "
        "agent and ~/.ssh keys",
    )
    partition: str | None = Field(None, description="sbatch --partition; default: the cluster's")
    account: str | None = Field(None, description="sbatch --account (your lab's allocation)")
    qos: str | None = Field(None, description="sbatch --qos")
    gres: str = Field(
        "gpu",
        description="the GRES name of the GPUs, optionally with their type (gpu:a100); the "
        "count comes from resources.gpus",
    )
    constraint: str | None = Field(None, description="sbatch --constraint (node features)")
    sbatch_options: dict[str, OptionValue] = Field(
        default_factory=dict,
        description="more sbatch options, {mail-type: END} -> --mail-type=END, {exclusive: true} "
        "-> --exclusive; the ones gpujobs sets (time, nodes, gres, ...) have fields of their own",
    )
    workdir: str = Field(
        "~/gpujobs",
        description="a folder on the cluster's shared filesystem (seen by the login and the "
        "compute nodes) for job folders and venvs (~ = home)",
    )
    python: str = Field("python3", description="the cluster's Python, used to make the venv")
    cost_per_hour: float = Field(
        0.0, ge=0, le=10_000, description="what a node-hour costs you in USD (a lab's rate)"
    )

    @field_validator("login")
    @classmethod
    def _login(cls, value: str) -> str:
        from gpujobs.spec import parse_ssh_host

        parse_ssh_host(value)
        return value.strip()

    @field_validator("identity_file")
    @classmethod
    def _identity_file(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("/", "~/")):
            raise ValueError(f"{value!r}: give an absolute path or one under ~/")
        return value

    @field_validator("partition", "account", "qos")
    @classmethod
    def _plain_name(cls, value: str | None) -> str | None:
        if value is not None and not _NAME.match(value):
            raise ValueError(f"{value!r} is not a Slurm name (letters, digits, _ . : , - only)")
        return value

    @field_validator("constraint")
    @classmethod
    def _constraint(cls, value: str | None) -> str | None:
        if value is not None and not _CONSTRAINT.match(value):
            raise ValueError(
                f"{value!r} is not a Slurm constraint (features joined by & | , without spaces)"
            )
        return value

    @field_validator("gres")
    @classmethod
    def _gres(cls, value: str) -> str:
        if not _GRES.match(value):
            raise ValueError(f"{value!r}: give the GRES name, e.g. gpu or gpu:a100 (no count)")
        return value

    @field_validator("sbatch_options")
    @classmethod
    def _options(cls, value: dict[str, OptionValue]) -> dict[str, OptionValue]:
        for key, option in value.items():
            name = key.lstrip("-")
            if not _OPTION.match(name):
                raise ValueError(f"{key!r} is not an sbatch long option name (e.g. mail-type)")
            if name in RESERVED_OPTIONS:
                raise ValueError(
                    f"--{name} is set by gpujobs (from resources, nodes, budget or the slurm "
                    "fields); remove it from sbatch_options"
                )
            if isinstance(option, str) and any(ch in option for ch in "\n\r\0"):
                raise ValueError(f"{key}: the value holds a control character")
        return {key.lstrip("-"): option for key, option in value.items()}

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        if not (value.startswith("/") or value == "~" or value.startswith("~/")):
            raise ValueError(f"{value!r}: give an absolute path or one under ~/")
        if any(ch in value for ch in "\n\r\0"):
            raise ValueError("the path holds a control character")
        return value.rstrip("/") or "/"

    def option_words(self) -> list[str]:
        """sbatch_options as command-line words: --key=value, or --key for true."""
        words = []
        for key, option in sorted(self.sbatch_options.items()):
            if option is True:
                words.append(f"--{key}")
            elif option is not False:
                words.append(f"--{key}={option}")
        return words
