"""The job spec: a pydantic model, loaded from YAML with errors that point at file, line and field.

Every error is one line: `FILE:LINE: FIELD: what is wrong; expected: what is allowed`.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from gpujobs.dev_spec import DevSession, dev_command
from gpujobs.errors import SpecError, register_secrets
from gpujobs.spec_slurm import SlurmSettings
from gpujobs.workload_args import (
    WorkloadArgError,
    args_json_schema,
    check_args,
    flag_text,
    workload_notes,
)
from gpujobs.workloads import bundled_workloads

# Each provider issue widens this list as the provider lands, so editors only offer what works.
ProviderName = Literal["local", "ssh", "slurm", "aws", "gcp", "paperspace"]
RuntimeName = Literal["auto", "host", "venv", "docker"]

# Flags gpujobs itself passes to a bundled workload; a spec must not set them through `args`.
RESERVED_ARGS = frozenset({"data", "out", "resume", "checkpoint-every-minutes", "keep"})
_ARG_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*$")
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
REDACTED = "***"
# Linux's MAX_ARG_STRLEN: one "KEY=value" string longer than this makes every exec fail (E2BIG),
# the launch script's own included. The total stays well inside ARG_MAX (2 MiB by default).
_MAX_ENV_STRING = 128 * 1024
_MAX_ENV_TOTAL = 1024 * 1024
# Top-level fields whose values may be secrets: never echoed in an error, redacted when stored.
SECRET_FIELDS = frozenset({"env"})
_GPU_NAME = re.compile(r"^[A-Z0-9][A-Z0-9_-]{0,31}$")
_PLAIN_KEY = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
# Values in error lines are shown short: an alias-grown value must not make a 400 kB line.
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = _SHORT.maxdict = _SHORT.maxtuple = _SHORT.maxset = 5
_SHORT.maxlevel = 3
_SHORT_TOTAL = 200  # reprlib bounds each part, not the whole
# A spec is a page of YAML; one that grows past this through its aliases is refused.
_MAX_EXPANDED_NODES = 20_000

JobName = Annotated[
    str,
    StringConstraints(pattern=r"^[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?$"),
    Field(description="lowercase letters, digits and dashes, at most 40, e.g. mnist-run"),
]
# A list is for flags that take a comma list: [0.1, 0, 1] -> --flag 0.1,0,1.
ArgValue = str | int | float | bool | list[str | int | float]


def _node_path(value: str) -> str:
    """Where a `files` entry lands: absolute, or relative to the job's working folder; never
    above it, never a control character (it becomes a shell word and a mount point)."""
    if not value or any(ch in value for ch in "\0\n\r:,") or "\\" in value:
        raise ValueError(f"{value!r}: give a path such as /files/vgg19.pth or weights/model.pt")
    parts = [part for part in value.split("/") if part not in ("", ".")]
    if not parts or ".." in parts:
        raise ValueError(f"{value!r}: a node path may not be empty or climb with '..'")
    return ("/" if value.startswith("/") else "") + "/".join(parts)


NodePath = Annotated[str, AfterValidator(_node_path)]
URL_SOURCE = re.compile(r"^https?://[^\s]+$")


class _Strict(BaseModel):
    # No inf or NaN anywhere: a budget of .inf is no budget, and no timer can be set from it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Resources(_Strict):
    gpu: str | None = Field(None, description="GPU model, e.g. T4, A10G, L4, A100; none = no GPU")
    gpus: int | None = Field(
        None, ge=0, le=16, description="GPUs per node, 0 to 16 (default 1 if gpu is set, else 0)"
    )
    cpus: int | None = Field(None, ge=1, le=512, description="minimum vCPUs per node")
    memory_gb: float | None = Field(None, gt=0, description="minimum memory per node in GB")
    disk_gb: float | None = Field(None, gt=0, description="minimum free disk per node in GB")

    @field_validator("gpu")
    @classmethod
    def _gpu_upper(cls, value: str | None) -> str | None:
        if not value:
            return None
        name = value.strip().upper()
        if not _GPU_NAME.match(name):
            raise ValueError(
                f"{reprlib.repr(value)} is not a GPU model name (letters, digits, - and _, "
                "e.g. T4, A100-80GB)"
            )
        return name

    @property
    def gpu_count(self) -> int:
        if self.gpus is not None:
            return self.gpus
        return 1 if self.gpu else 0


class Budget(_Strict):
    max_usd: float | None = Field(
        None, ge=0.01, le=1e6, description="hard cap on the job's cost in USD, 0.01 to 1,000,000"
    )
    max_hours: float | None = Field(
        None, gt=0, le=8784, description="hard cap on the job's wall time in hours, up to a year"
    )


def _absolute(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"{value!r} is not an absolute path")
    return value


AbsolutePath = Annotated[str, AfterValidator(_absolute)]


_FETCHED = re.compile(r"^(s3|gs|https?|hf|kaggle)://")
_REMOTE_SHAPES = {
    "s3": re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,62}(/\S*)?$"),
    "gs": re.compile(r"^gs://[a-z0-9][a-z0-9._-]{1,221}(/\S*)?$"),
    "http": URL_SOURCE,
    "https": URL_SOURCE,
    "hf": re.compile(r"^hf://datasets/[\w.-]+/[\w.-]+(@[\w./-]+)?/?$"),
    "kaggle": re.compile(r"^kaggle://(competitions/[\w.-]+|[\w.-]+/[\w.-]+)/?$"),
}
_REMOTE_EXAMPLES = (
    "s3://bucket/prefix, gs://bucket/prefix, https://host/file.tar.gz, "
    "hf://datasets/ORG/NAME[@revision], kaggle://OWNER/DATASET, kaggle://competitions/NAME"
)


def is_fetched(source: str) -> bool:
    """A source the node fetches itself (a bucket, a URL, the Hub, Kaggle), not a local path."""
    return bool(_FETCHED.match(source))


class Dataset(_Strict):
    source: str | list[str] = Field(
        description="a local directory (relative to the spec file), or where the node fetches "
        f"it from: {_REMOTE_EXAMPLES}; a list for several (at most one local directory)"
    )
    target: AbsolutePath = Field("/data", description="absolute path where the workload reads it")
    sha256: str | None = Field(
        None,
        pattern=r"^[0-9a-fA-F]{64}$",
        description="the sha256 of an https:// source's file, checked on the node",
    )
    endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+/?$",
        description="an S3-compatible store (R2, MinIO, Ceph) for s3:// sources; default: "
        "AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL, else AWS",
    )

    @field_validator("source")
    @classmethod
    def _sources(cls, value: str | list[str]) -> str | list[str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise ValueError("give at least one source")
        local = 0
        for item in items:
            scheme = item.split("://", 1)[0] if "://" in item else None
            if scheme is None:
                local += 1
                continue
            shape = _REMOTE_SHAPES.get(scheme)
            if shape is None or not shape.match(item):
                raise ValueError(
                    f"{_SHORT.repr(item)}: expected a local folder or {_REMOTE_EXAMPLES}"
                )
        if local > 1:
            raise ValueError("at most one local directory; put the others inside it")
        return value

    @property
    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)

    @property
    def local_source(self) -> str | None:
        return next((s for s in self.sources if not is_fetched(s)), None)

    @property
    def fetched_sources(self) -> list[str]:
        return [s for s in self.sources if is_fetched(s)]


class Checkpoints(_Strict):
    path: AbsolutePath = Field(
        "/ckpt", description="absolute path where the workload writes checkpoints"
    )
    every_minutes: float = Field(10, gt=0, description="minutes between checkpoints and pulls")
    keep: int = Field(3, ge=1, le=1000, description="how many checkpoints the node keeps")
    upload: str | None = Field(
        None,
        pattern=r"^s3://[a-z0-9][a-z0-9.-]{1,62}(/\S*)?$",
        description="s3://bucket/prefix: the node uploads each checkpoint there as it is "
        "written (besides bringing them home), so they survive a laptop that is gone",
    )
    upload_endpoint_url: str | None = Field(
        None,
        pattern=r"^https?://[^\s/]+/?$",
        description="an S3-compatible store for `upload` (default: AWS_ENDPOINT_URL_S3, AWS)",
    )


class RegistryAuth(_Strict):
    server: str = Field(
        pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$",
        description="the registry of `image`, e.g. ghcr.io or ACCOUNT.dkr.ecr.REGION.amazonaws.com",
    )
    username: str = Field(pattern=r"^[^\s]{1,256}$", description="the registry user")
    password_env: str = Field(
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="the environment variable (on this machine) that holds the password or "
        "token; its value is never stored, shown or put on a command line",
    )


class Recovery(_Strict):
    max_restarts: int = Field(
        3,
        ge=0,
        le=100,
        description="how many times a job whose node was lost (a spot machine reclaimed, a "
        "node that stopped answering) is restarted elsewhere from its last checkpoint; 0: never",
    )


# user@host:port, user@host, host; IPv6 in brackets: user@[::1]:2222.
_SSH_HOST = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._][A-Za-z0-9._-]*)@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)"
    r"(?::(?P<port>[0-9]{1,5}))?$"
)


def parse_ssh_host(text: str) -> tuple[str | None, str, int]:
    """'user@host:port' -> (user or None, host, port); ValueError says what is accepted."""
    match = _SSH_HOST.match(text.strip())
    port = int(match.group("port") or 22) if match else 0
    if match is None or not 0 < port < 65536:
        raise ValueError(f"{text!r} is not user@host[:port] (e.g. alice@lab-gpu-3:22)")
    return match.group("user"), match.group("host").strip("[]"), port


class SshHosts(_Strict):
    hosts: list[str] = Field(
        min_length=1, description="machines you can already log in to, as user@host[:port]"
    )
    identity_file: str | None = Field(
        None, description="private key to log in with; default: your ssh agent and ~/.ssh keys"
    )
    workdir: str = Field(
        "~/.gpujobs", description="folder on each host for job folders and venvs (~ = home)"
    )
    python: str = Field("python3", description="the host's Python, used to make the venv")

    @field_validator("hosts")
    @classmethod
    def _host_syntax(cls, value: list[str]) -> list[str]:
        for item in value:
            parse_ssh_host(item)
        if len(set(value)) != len(value):
            raise ValueError("a host is listed twice")
        return value

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str) -> str:
        if not (value.startswith("/") or value == "~" or value.startswith("~/")):
            raise ValueError(f"{value!r}: give an absolute path or one under ~/")
        if "\n" in value or "\0" in value:
            raise ValueError("the path holds a control character")
        return value.rstrip("/") or "/"


class JobSpec(_Strict):
    """A training job: what runs, on what, where, for how much."""

    name: JobName
    workload: str | None = Field(None, description="a bundled workload in jobs/")
    args: dict[str, ArgValue] = Field(
        default_factory=dict,
        description="flags for the workload: {epochs: 3} -> --epochs 3, {amp: true} -> --amp, "
        "a list -> one comma-separated value; checked against the workload's own flags",
    )
    command: str | None = Field(None, description="your own shell command, instead of workload")
    workdir: str | None = Field(
        None,
        description="your code folder (relative to the spec file), sent to every node "
        "(.gitignore and .gpujobsignore honoured); `command` and `setup` run inside it",
    )
    setup: str | None = Field(
        None,
        description="shell lines run once per node before the job, e.g. "
        "`pip install -r requirements.txt`; skipped when the same setup and requirement files "
        "already ran there",
    )
    files: dict[NodePath, str] = Field(
        default_factory=dict,
        description="files and folders the job needs besides the dataset (weights, "
        "embeddings): {node path: local path, https:// URL or s3/gs/hf/kaggle source}; cached on "
        "the node by content, "
        "so the next job does not send them again. A relative node path is inside the job's "
        "working folder; args may name a file by its node path",
    )
    image: str | None = Field(
        None,
        description="a Docker image of your own (docker runtime), e.g. one `gpujobs image push` "
        "made; default: the workload image, built on the node",
    )
    registry_auth: RegistryAuth | None = Field(
        None,
        description="how the node logs in to pull a private `image` (default: your "
        "docker login for its registry, if any)",
    )
    runtime: RuntimeName = Field(
        "auto",
        description="how the workload runs on a node: auto (the provider's choice: host here, "
        "venv over ssh, docker on clouds), host, venv or docker",
    )
    resources: Resources = Field(default_factory=Resources)
    nodes: int = Field(1, ge=1, le=64, description="number of nodes, 1 to 64")
    providers: list[ProviderName] = Field(
        default_factory=lambda: ["local"], min_length=1, description="in order of preference"
    )
    regions: list[str] = Field(default_factory=list, description="allowed regions; empty = all")
    spot: bool = Field(False, description="allow spot/preemptible machines")
    budget: Budget = Field(default_factory=Budget)
    cost_per_hour: float | None = Field(
        None,
        ge=0,
        le=10_000,
        description="what a local or ssh node costs you in USD per hour (a lab's rate, "
        "electricity), counted in the ledger and budgets; clouds use their catalog prices",
    )
    dataset: Dataset | None = None
    checkpoints: Checkpoints = Field(default_factory=Checkpoints)
    recovery: Recovery = Field(default_factory=Recovery)
    env: dict[str, str | int | float | bool] = Field(
        default_factory=dict, description="environment variables for the workload"
    )
    ssh: SshHosts | None = Field(
        None, validate_default=True, description="the machines of the ssh provider"
    )
    dev: DevSession | None = Field(
        None,
        description="an interactive session (`gpujobs dev`): JupyterLab instead of a "
        "workload, with the dataset in place, a dollar cap and an idle stop",
    )
    ports: list[int] = Field(
        default_factory=list,
        max_length=32,
        description="ports on the node forwarded to localhost over the job's SSH while it runs "
        "(TensorBoard 6006, Jupyter 8888); never opened on a cloud firewall",
    )
    notify: list[str] | None = Field(
        None,
        max_length=16,
        description="where to announce finished, failed, preempted, budget 80 % and budget stop: "
        "`desktop`, a webhook URL (JSON POST), an ntfy topic URL (https://ntfy.sh/topic or "
        "ntfy:https://server/topic), or any apprise URL (mailto://, slack://, ...); "
        "default: `notify` in the user's config.yaml",
    )
    slurm: SlurmSettings | None = Field(
        None, validate_default=True, description="the cluster of the slurm provider"
    )

    @field_validator("workload")
    @classmethod
    def _bundled(cls, value: str | None) -> str | None:
        if value is None:
            return None
        known = bundled_workloads()
        if value not in known:
            raise ValueError(
                f"unknown workload {value!r}; bundled: {', '.join(known)} "
                "(or give `command:` to run your own)"
            )
        return value

    @field_validator("ssh")
    @classmethod
    def _ssh_when_listed(cls, value: SshHosts | None, info: ValidationInfo) -> SshHosts | None:
        if value is None and "ssh" in (info.data.get("providers") or ()):
            raise ValueError(
                "providers lists ssh: add `ssh: {hosts: [user@host:port]}` naming the machines"
            )
        return value

    @field_validator("ports")
    @classmethod
    def _port_numbers(cls, value: list[int]) -> list[int]:
        for port in value:
            if not 1 <= port <= 65535:
                raise ValueError(f"{port} is not a TCP port (1 to 65535)")
        if len(set(value)) != len(value):
            raise ValueError("a port is listed twice: list each once")
        return value

    @field_validator("notify")
    @classmethod
    def _notify_targets(cls, value: list[str] | None) -> list[str] | None:
        for target in value or ():
            if target != "desktop" and "://" not in target:
                raise ValueError(
                    f"{target!r} is not a notification target: use desktop, a webhook or ntfy "
                    "URL (https://...), or an apprise URL (mailto://...)"
                )
        return value

    @field_validator("slurm")
    @classmethod
    def _slurm_when_listed(
        cls, value: SlurmSettings | None, info: ValidationInfo
    ) -> SlurmSettings | None:
        if value is None and "slurm" in (info.data.get("providers") or ()):
            raise ValueError(
                "providers lists slurm: add `slurm: {login: user@login-node}` naming the "
                "cluster's login node"
            )
        return value

    @field_validator("cost_per_hour")
    @classmethod
    def _own_machines_only(cls, value: float | None, info: ValidationInfo) -> float | None:
        own = {"local", "ssh"} & set(info.data.get("providers") or ())
        if value is not None and not own:
            raise ValueError(
                "prices local and ssh nodes only, and providers lists neither; clouds use "
                "their catalog prices: remove cost_per_hour"
            )
        return value

    @field_validator("args")
    @classmethod
    def _arg_keys(cls, value: dict[str, ArgValue]) -> dict[str, ArgValue]:
        for key in value:
            if not _ARG_KEY.match(key):
                raise ValueError(f"{key!r} is not a flag name (letters, digits, - and _)")
            if key.replace("_", "-") in RESERVED_ARGS:
                raise ValueError(
                    f"{key!r} is set by gpujobs (from dataset/checkpoints); remove it from args"
                )
        return value

    @field_validator("args")
    @classmethod
    def _workload_takes_args(
        cls, value: dict[str, ArgValue], info: ValidationInfo
    ) -> dict[str, ArgValue]:
        # The workload's own parser judges its args now, not on a provisioned node.
        workload = info.data.get("workload")
        if workload is not None:
            try:
                check_args(workload, value, reserved=RESERVED_ARGS)
            except WorkloadArgError as exc:
                raise _args_error(exc, value) from None
        return value

    @field_validator("env")
    @classmethod
    def _env_keys(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if not _ENV_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.startswith("GPUJOBS_"):
                raise ValueError(f"{key!r}: names starting GPUJOBS_ are set by gpujobs")
        texts = {key: _env_text(item) for key, item in value.items()}
        for key, text in texts.items():
            size = len(f"{key}={text}".encode())
            if size >= _MAX_ENV_STRING:
                raise ValueError(
                    f"{key!r} is {size:,} bytes; Linux passes at most {_MAX_ENV_STRING - 1:,} "
                    "bytes per variable to a program: put the value in a file and send it "
                    "with `files:`"
                )
        total = sum(len(f"{key}={text}".encode()) + 1 for key, text in texts.items())
        if total > _MAX_ENV_TOTAL:
            raise ValueError(
                f"the variables total {total:,} bytes; keep them under {_MAX_ENV_TOTAL:,} "
                "(programs get them with their arguments, within the kernel's limit): put "
                "large values in files and send them with `files:`"
            )
        return texts

    @model_validator(mode="before")
    @classmethod
    def _dev_runs_jupyter(cls, data: object) -> object:
        bare = isinstance(data, dict) and data.get("workload") is None and not data.get("command")
        if bare and isinstance(data, dict) and isinstance(data.get("dev"), dict):
            port = data["dev"].get("port", 8888)
            if isinstance(port, int):
                data = {**data, "command": dev_command(port)}
        return data

    @model_validator(mode="after")
    def _one_entry_point(self) -> JobSpec:
        if (self.workload is None) == (self.command is None):
            raise ValueError(
                "give exactly one of `workload:` (one of "
                f"{', '.join(bundled_workloads())}) or `command:`"
            )
        if self.command is not None and self.args:
            raise ValueError("`args` goes with `workload:`; put flags in `command:` itself")
        return self

    def workload_notes(self) -> list[str]:
        """The bundled workload's advice on these args, for launch and plan to print before
        anything is provisioned (e.g. transfer without weights trains from scratch)."""
        return workload_notes(self.workload, self.args) if self.workload is not None else []

    def workload_flags(self, node_paths: Mapping[str, str] | None = None) -> list[str]:
        """`args` as command-line flags: {epochs: 3, amp: true} -> --epochs 3 --amp; a list
        becomes one comma string ([0.1, 1] -> 0.1,1). `node_paths` maps a `files` node path
        to where that file really is on a node without containers: an arg naming it (or a
        path inside it) is given the real place."""
        flags: list[str] = []
        for key, value in self.args.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                flags.append(flag)
            elif isinstance(value, list):
                flags += [flag, ",".join(str(item) for item in value)]
            elif value is not False:
                text = flag_text(value)
                flags += [flag, _placed(text, node_paths) if node_paths else text]
        return flags

    def redacted(self) -> JobSpec:
        """A copy safe to store and show: environment values may be secrets."""
        # Webhook URLs carry their secret in the path or query: keep only where they go.
        notify = None if self.notify is None else [_url_origin(t) for t in self.notify]
        return self.model_copy(update={"env": dict.fromkeys(self.env, REDACTED), "notify": notify})


def _url_origin(target: str) -> str:
    """`https://hooks.example/T0/secret?x=1` -> `https://hooks.example/<redacted>`."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return target
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/{REDACTED}"


def _placed(text: str, node_paths: Mapping[str, str]) -> str:
    for node_path, real in node_paths.items():
        if text == node_path or text.startswith(node_path.rstrip("/") + "/"):
            return real + text[len(node_path) :]
    return text


def _args_error(exc: WorkloadArgError, args: dict[str, ArgValue]) -> ValidationError:
    """The error at args.<key>, so the line names that key's line and field."""
    problem = PydanticCustomError("value_error", "{problem}", {"problem": exc.problem})
    detail = InitErrorDetails(type=problem, loc=(exc.key,), input=args.get(exc.key))
    return ValidationError.from_exception_data("args", [detail])


def _env_text(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    return str(value)


def load_spec(path: Path, *, defaults: Mapping[str, object] | None = None) -> JobSpec:
    """Read, validate and resolve a spec file, or raise one SpecError line; `defaults`: top
    level fields the file may leave out (`gpujobs dev` gives `dev: {}`)."""
    label = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{label}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"{label}: cannot read the spec ({exc.__class__.__name__})") from None
    return parse_spec(text, label=label, base_dir=path.resolve().parent, defaults=defaults)


def parse_spec(
    text: str, *, label: str, base_dir: Path, defaults: Mapping[str, object] | None = None
) -> JobSpec:
    root = _compose(text, label)
    data = _construct(text, root, label) if root is not None else None
    if not isinstance(data, dict):
        kind = "nothing" if data is None else type(data).__name__
        raise SpecError(
            f"{label}: a job spec is a YAML mapping (name: ..., workload: ...), got {kind}"
        )
    if isinstance(data.get("env"), dict):
        register_secrets(data["env"])  # before validation: its errors must not show them either
    data.setdefault("name", _default_name(label))
    for key, value in (defaults or {}).items():
        data.setdefault(key, value)
    try:
        spec = JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_describe(exc, label, root)) from None
    try:
        spec.model_dump_json()  # what the store will write: every string must be encodable
    except (UnicodeError, ValueError):
        raise SpecError(
            f"{label}: a string holds a lone UTF-16 surrogate (an escape like \\ud800); remove it"
        ) from None
    spec = _resolve_dataset(spec, label, root, base_dir)
    spec = _resolve_workdir(spec, label, root, base_dir)
    spec = _resolve_files(spec, label, root, base_dir)
    return _resolve_identity_file(spec, label, root, base_dir)


def _compose(text: str, label: str) -> yaml.Node | None:
    """Parse YAML into nodes (which keep line numbers) and refuse duplicate keys, keys that are
    not plain scalars, aliases that hold themselves, and documents their aliases blow up."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        raise SpecError(_yaml_error(exc, label)) from None
    except RecursionError:
        raise SpecError(f"{label}: bad YAML: nested too deeply") from None
    if root is not None:
        _check_nodes(root, label)
    return root


def _construct(text: str, root: yaml.Node, label: str) -> object:
    """The document's Python value; a tag it cannot build is one error line."""
    try:
        return yaml.SafeLoader(text).construct_document(root)
    except yaml.YAMLError as exc:
        raise SpecError(_yaml_error(exc, label)) from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        line = root.start_mark.line + 1
        raise SpecError(
            f"{label}:{line}: bad YAML: a value cannot be read ({exc.__class__.__name__}); "
            "write plain mappings, lists, strings and numbers"
        ) from None


def _yaml_error(exc: yaml.YAMLError, label: str) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "invalid YAML"
        return f"{label}{where}: bad YAML: {_one_line(problem)}"
    if isinstance(exc, yaml.reader.ReaderError):
        return (
            f"{label}: bad YAML: character {exc.character!r} at position {exc.position} "
            "cannot be in a YAML file; remove it"
        )
    return f"{label}: bad YAML: {_one_line(str(exc))}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]


def _check_nodes(root: yaml.Node, label: str) -> None:
    """Walk the node graph once per node (aliases share nodes, so a billion laughs is short
    here), counting the size it would have once expanded."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            sizes[key] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[key] > _MAX_EXPANDED_NODES:
                raise SpecError(
                    f"{label}:{node.start_mark.line + 1}: bad YAML: its aliases expand it past "
                    f"{_MAX_EXPANDED_NODES:,} values; a job spec is a page of plain YAML"
                )
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise SpecError(f"{label}:{node.start_mark.line + 1}: bad YAML: an alias holds itself")
        on_path.add(key)
        stack.append((node, True))
        if isinstance(node, yaml.MappingNode):
            _refuse_bad_keys(node, label)
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _refuse_bad_keys(node: yaml.MappingNode, label: str) -> None:
    seen: set[str] = set()
    for key, _ in node.value:
        line = key.start_mark.line + 1
        if not isinstance(key, yaml.ScalarNode):
            raise SpecError(f"{label}:{line}: bad YAML: a key must be a plain name, not a "
                            "list or mapping")  # fmt: skip
        if key.value in seen:
            raise SpecError(f"{label}:{line}: {_key(key.value)}: given twice; keep one")
        seen.add(key.value)


def _key(part: object) -> str:
    """A field path part as a user reads it: plain names as they are, anything else quoted."""
    text = str(part)
    return text if isinstance(part, int) or _PLAIN_KEY.match(text) else _short(text)


def _short(value: object) -> str:
    text = _SHORT.repr(value)
    return text if len(text) <= _SHORT_TOTAL else text[: _SHORT_TOTAL - 3] + "..."


def _default_name(label: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", Path(label).stem.lower()).strip("-")
    return stem[:40].strip("-") or "job"


def _line_of(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The line of the deepest node along `loc` that exists in the YAML."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        child = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    child = value
                    line = key.start_mark.line + 1
                    break
        elif (
            isinstance(node, yaml.SequenceNode)
            and isinstance(part, int)
            and 0 <= part < len(node.value)
        ):
            child = node.value[part]
            line = child.start_mark.line + 1
        if child is None:
            break
        node = child
    return line


def _describe(exc: ValidationError, label: str, root: yaml.Node | None) -> str:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    field = ".".join(_key(part) for part in loc) or "(top level)"
    line = _line_of(root, loc)
    where = f"{label}:{line}" if line else label
    message = _message(first, loc)
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {field}: {message}{more}"


def _message(error: Any, loc: tuple[int | str, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        allowed = _allowed_fields(loc[:-1])
        return f"unknown field; allowed here: {', '.join(allowed)}"
    if kind == "missing":
        expected = _expected(loc)
        return "required" + (f"; expected: {expected}" if expected else "")
    # Our own validators raise ValueError; pydantic prefixes their text with this.
    text = str(error["msg"]).removeprefix("Value error, ")
    text = text[0].lower() + text[1:] if text else text
    if (
        kind != "value_error"
        and "input" in error
        and not isinstance(error["input"], dict)
        and not (loc and loc[0] in SECRET_FIELDS)
    ):
        text += f" (got {_short(error['input'])})"
    expected = _expected(loc) if kind != "value_error" else None
    return text + (f"; expected: {expected}" if expected else "")


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    model: type[BaseModel] = JobSpec
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = getattr(annotation, "__args__", (annotation,))
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            return None
        model = nested[0]
    return model


def _allowed_fields(loc: tuple[int | str, ...]) -> list[str]:
    model = _model_at(loc)
    return list(model.model_fields) if model else []


def _expected(loc: tuple[int | str, ...]) -> str | None:
    if not loc:
        return None
    model = _model_at(loc[:-1])
    field = model.model_fields.get(str(loc[-1])) if model else None
    return field.description if field else None


def _resolve_dataset(spec: JobSpec, label: str, root: yaml.Node | None, base: Path) -> JobSpec:
    if spec.dataset is None or spec.dataset.local_source is None:
        return spec
    local = spec.dataset.local_source
    source = _local_path(local, base, label, root, ("dataset", "source"))
    if not _is(source, Path.is_dir):
        raise SpecError(
            f"{_where(label, root, ('dataset', 'source'))}: dataset.source: {str(source)!r} is "
            "not a directory; give a local folder (relative paths are read from the spec's folder) "
            f"or a source the node fetches ({_REMOTE_EXAMPLES})"
        )
    sources = [str(source) if s == local else s for s in spec.dataset.sources]
    resolved = sources[0] if isinstance(spec.dataset.source, str) else sources
    dataset = spec.dataset.model_copy(update={"source": resolved})
    return spec.model_copy(update={"dataset": dataset})


def _resolve_workdir(spec: JobSpec, label: str, root: yaml.Node | None, base: Path) -> JobSpec:
    if spec.workdir is None:
        return spec
    folder = _local_path(spec.workdir, base, label, root, ("workdir",))
    if not _is(folder, Path.is_dir):
        raise SpecError(
            f"{_where(label, root, ('workdir',))}: workdir: {str(folder)!r} is not a folder; "
            "give your code's folder (relative paths are read from the spec's folder)"
        )
    return spec.model_copy(update={"workdir": str(folder)})


def _resolve_files(spec: JobSpec, label: str, root: yaml.Node | None, base: Path) -> JobSpec:
    resolved: dict[str, str] = {}
    for node_path, source in spec.files.items():
        loc = ("files", node_path)
        if re.match(r"^[a-z][a-z0-9+.-]*://", source):
            shape = _REMOTE_SHAPES.get(source.split("://", 1)[0])
            if shape is None or not shape.match(source):
                raise SpecError(
                    f"{_where(label, root, loc)}: files.{node_path}: {_short(source)}: the node "
                    f"fetches {_REMOTE_EXAMPLES}; give one of those or a local path"
                )
            resolved[node_path] = source
            continue
        path = _local_path(source, base, label, root, loc)
        if not path.exists():
            raise SpecError(
                f"{_where(label, root, loc)}: files.{node_path}: {str(path)!r} does not exist; "
                "give a local file or folder (relative paths are read from the spec's folder) "
                "or an https:// URL"
            )
        resolved[node_path] = str(path)
    return spec.model_copy(update={"files": resolved}) if resolved else spec


def _resolve_identity_file(
    spec: JobSpec, label: str, root: yaml.Node | None, base: Path
) -> JobSpec:
    if spec.ssh is None or spec.ssh.identity_file is None:
        return spec
    path = _local_path(spec.ssh.identity_file, base, label, root, ("ssh", "identity_file"))
    if not _is(path, Path.is_file):
        raise SpecError(
            f"{_where(label, root, ('ssh', 'identity_file'))}: ssh.identity_file: {str(path)!r} "
            "is not a file; give the private key you log in with (relative paths are read from "
            "the spec's folder), or leave it out to use your ssh agent"
        )
    ssh = spec.ssh.model_copy(update={"identity_file": str(path)})
    return spec.model_copy(update={"ssh": ssh})


def _local_path(
    value: str, base: Path, label: str, root: yaml.Node | None, loc: tuple[str, ...]
) -> Path:
    """A path on this machine as a spec gives it: ~ expanded, relative to the spec's folder."""
    try:
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    except (OSError, ValueError, RuntimeError) as exc:  # a NUL, ~nosuchuser, a name too long
        raise SpecError(
            f"{_where(label, root, loc)}: {'.'.join(loc)}: {_short(value)} is not a "
            f"usable path here ({exc.__class__.__name__}); give a local path"
        ) from None


def _is(path: Path, test: Any) -> bool:
    try:
        return bool(test(path))
    except (OSError, ValueError):
        return False


def _where(label: str, root: yaml.Node | None, loc: tuple[str, ...]) -> str:
    line = _line_of(root, loc)
    return f"{label}:{line}" if line else label


def json_schema() -> dict[str, Any]:
    schema = JobSpec.model_json_schema()
    # Each workload's own flags under `args`, for editors' completion.
    schema["allOf"] = args_json_schema(bundled_workloads(), reserved=RESERVED_ARGS)
    return schema
