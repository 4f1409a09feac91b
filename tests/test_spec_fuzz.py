"""Property tests: thousands of generated and hostile YAML specs fed to `gpujobs launch`.

`launch` runs in this process against scripted providers (all five names) that offer machines big
enough for any resources the strategies ask for, in the regions they name, and whose every
provisioning is out of capacity. So every spec ends one of two ways, never a third:

- valid: a recorded job that ends FAILED ("every placement failed"), exit 1; nothing ran;
- invalid, or one that no placement or budget admits: exit 2, nothing recorded, and stderr is one
  line, `error: ...`, with no control character and not much longer than the spec itself.

Never a traceback, an "internal error", another exit code, or a hang.

ONCE_BROKEN holds each spec that this fuzzing found breaking those rules, all fixed since; the
strategies reach their triggers too. The examples are derandomized: every run, in CI too,
launches the same specs.

A bug it finds next is pinned by one strict-xfail example, with the strategies steered clear of
its trigger (hypothesis runs xfail examples apart from generated ones) until it is fixed.
"""

from __future__ import annotations

import math
import re
import signal
import sys
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gpujobs.api.controller import Controller
from gpujobs.cli.app import create_app
from gpujobs.errors import EXIT_BAD_INPUT, EXIT_JOB_FAILED, NoCapacityError, SpecError
from gpujobs.money.budget import JobCap, cap_for
from gpujobs.paths import HomeLayout
from gpujobs.providers.base import Availability, Offer
from gpujobs.providers.cloud import Bootstrap, CloudNodeSettings
from gpujobs.spec import RESERVED_ARGS, parse_spec
from gpujobs.state import JobState, Store
from gpujobs.testing import FakeClock, ScriptedProvider
from gpujobs.workloads import bundled_workloads
from tests.conftest import gpujobs_cli

# -- the machines every provider offers ---------------------------------------------------------
PROVIDERS = ("local", "ssh", "aws", "gcp", "paperspace")
GPUS = ("T4", "A100")
REGIONS = ("us-east-1", "europe-west4")
WORKLOADS = tuple(bundled_workloads())


def scripted_offers(provider: str) -> list[Offer]:
    own = provider in ("local", "ssh")  # free, as those providers price them by default
    return [
        Offer(provider=provider, instance_type=f"{provider}-{gpu.lower()}-{region}", region=region,
              gpu=gpu, gpus=16, cpus=512, memory_gb=4096, disk_gb=100_000,
              price_per_hour=0.0 if own else 1.0, availability=Availability.AVAILABLE)
        for region in REGIONS
        for gpu in GPUS
    ]  # fmt: skip


@dataclass(frozen=True)
class Outcome:
    exit_code: int
    stdout: str
    stderr: str
    new_jobs: int


class Launcher:
    """`gpujobs launch SPEC` in this process. One controller and store serve every example of a
    test; each launch counts the jobs before and after."""

    def __init__(self, root: Path, home: HomeLayout, store: Store) -> None:
        self.store = store
        self.folder = root / "specs"
        (self.folder / "data" / "sub").mkdir(parents=True)  # for dataset.source
        (self.folder / "id_key").write_text("a private key, as far as a spec can tell\n")
        no_capacity = NoCapacityError("scripted: no capacity")
        providers = {}
        for name in PROVIDERS:
            offers = scripted_offers(name)
            errors = {offer.instance_type: no_capacity for offer in offers}
            providers[name] = ScriptedProvider(name, home.work, offers, provision_errors=errors)
        controller = Controller(home, store, lambda: providers, clock=FakeClock())
        # Built once: typer's CliRunner.invoke builds the click command again on every call,
        # which costs ten times what a refused launch does.
        self.command = typer.main.get_command(create_app(lambda: controller))
        self.runner = CliRunner()

    def launch(self, spec: bytes) -> Outcome:
        path = self.folder / "spec.yaml"
        path.write_bytes(spec)
        before = self.store.count_jobs()
        with self.runner.isolation() as (stdout, stderr, _):
            try:
                self.command.main(["launch", str(path)], prog_name="gpujobs")
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            out, err = stdout.getvalue(), stderr.getvalue()
        texts = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        return Outcome(code, *texts, self.store.count_jobs() - before)

    def check(self, spec: bytes) -> Outcome:
        """Launch `spec`; assert that it ended as a failed job or as one error line."""
        outcome = self.launch(spec)
        shown = outcome.stdout + outcome.stderr
        assert "Traceback" not in shown, shown[-3000:]
        assert "internal error" not in outcome.stderr, outcome.stderr[-3000:]
        if outcome.exit_code == EXIT_BAD_INPUT:
            assert outcome.new_jobs == 0, "a refused spec recorded a job"
            assert outcome.stdout == ""
            line = one_error_line(outcome.stderr)
            assert len(line) <= 4_000 + 10 * len(spec), f"a {len(line)}-character error line"
        elif outcome.exit_code == EXIT_JOB_FAILED:
            assert outcome.new_jobs == 1, f"exit 1, no job recorded: {outcome.stderr[-3000:]}"
            last = outcome.stderr.rstrip("\n").rsplit("\n", 1)[-1]
            failed = re.fullmatch(r"error: (\S+) failed: every placement failed \(.*", last)
            assert failed, outcome.stderr[-3000:]
            assert self.store.job(failed.group(1)).state is JobState.FAILED
        else:
            raise AssertionError(f"exit {outcome.exit_code}: {outcome.stderr[-3000:]}")
        return outcome


def one_error_line(stderr: str) -> str:
    assert stderr.startswith("error: ") and stderr.endswith("\n"), stderr[:3000]
    line = stderr[:-1]
    controls = sorted({ch for ch in line if ch != "\t" and unicodedata.category(ch) == "Cc"})
    assert not controls, f"control characters {controls} in the error line: {line[:3000]!r}"
    return line


@pytest.fixture
def launcher(tmp_path: Path, home: HomeLayout, store: Store) -> Iterator[Launcher]:
    # A foreground launch points SIGINT, SIGTERM and SIGHUP at its job: give them back after.
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    saved = {signum: signal.getsignal(signum) for signum in signals}
    yield Launcher(tmp_path, home, store)
    for signum, handler in saved.items():
        signal.signal(signum, handler)


# Every example of a test launches through the one Launcher (controller, store, providers) its
# function-scoped fixtures made: shared on purpose, hence the suppressed health check; each
# launch counts the store's jobs before and after instead of expecting an empty store.
FUZZ = settings(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture])  # fmt: skip

# -- scalars --------------------------------------------------------------------------------------
# Edges of the schema's ranges among them: budget.max_hours up to 8784, max_usd 0.01 to 1e6,
# cost_per_hour up to 10,000; and numbers whose budget arithmetic once overflowed.
EDGE_NUMBERS = [
    0, -1, 1, 16, 17, 64, 65, 513, 2**31, 2**64, -0.0, 0.01, 0.0099, 8784, 8784.01, 10_000,
    10_000.01, 10**6, 10**6 + 1, 1e-310, 1e-320, 1e308, math.inf, -math.inf,
]  # fmt: skip
NUMBERS = st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([*EDGE_NUMBERS, math.nan])
# Any character at all, and often one of those that broke error lines or the store: controls,
# NUL, lone surrogates (safe_dump writes those as escapes), byte order marks.
ANY_CHAR = st.characters(exclude_categories=[]) | st.sampled_from(
    "\0\t\n\r\x1b\x7f\x85\u2028\ud800\udfff\ufeff\ufffe"
)
TEXT = st.text(ANY_CHAR, max_size=40)
LONG_TEXT = st.builds(lambda char, count: char * count, ANY_CHAR, st.integers(300, 5_000))
KEY_TEXT = st.text(ANY_CHAR, min_size=1, max_size=30)
KEYS = KEY_TEXT | st.integers(-5, 5) | st.booleans()
GPU_NAMES = st.sampled_from([
    "", " ", "t4 ", "A100-80GB", "H100_SXM", "A" * 32, "A" * 33, "-T4", "_T4", "T 4", "T4\n",
    "T4\x1b[2J", "T\u20ac4", "ü", "T4\0",
])  # fmt: skip
# Local paths the OS refuses: a NUL, an unknown ~user, names and paths past its limits.
BAD_PATHS = st.sampled_from([
    "data\0", "\0", "~gpujobs-no-such-user/data", "~root", "k" * 300, "data/" + "d" * 256,
    "a/" * 2100, "/" + "x" * 5000, "data/\udfff",
])  # fmt: skip
ODD_PATHS = st.sampled_from([
    "", " ", ".", "..", "../..", "../../../../../../..", "/", "//", "/nonexistent/x", "~", "~/",
    "~/missing", "data", "./data", "data/", "data/sub/..", "data/../data", "data/sub",
    "../specs/data", "id_key", "./id_key", "data/../id_key", "/dev/null", "/proc/self",
    "/etc/passwd", "s3://bucket/x", "gs://b/x", "file:///tmp", "http://x", "C:\\data",
    "data\\sub", "data;rm -rf /", "$HOME", "%2e%2e", "data/./sub/../../data", "data\n",
])  # fmt: skip


# Any YAML-able value: scalars of every type, and lists and mappings of them.
JUNK = st.recursive(
    st.none() | st.booleans() | NUMBERS | TEXT | LONG_TEXT,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(KEYS, kids, max_size=4),
    max_leaves=8,
)

# -- near-valid specs, from the schema ------------------------------------------------------------
NAMES = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?", fullmatch=True)
# Flags every bundled workload takes, with values they accept (args are checked against the
# workload's own parser; odd names and values come from HOSTILE).
COMMON_ARGS = {
    "epochs": st.integers(1, 2**40) | st.sampled_from(["3", "10"]),
    "seed": st.integers(0, 2**40),
    "amp": st.booleans(),
    "device": st.sampled_from(["auto", "cpu", "cuda"]),
    "log-every": st.integers(0, 1000),
}
ARG_VALUES = TEXT | st.integers(-(2**40), 2**40) | st.floats() | st.booleans()
ENV_NAMES = st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,15}", fullmatch=True).filter(
    lambda key: not key.startswith("GPUJOBS_")
)
GOOD_HOSTS = st.sampled_from([
    "h", "alice@lab-gpu-3:22", "10.0.0.7", "u@10.0.0.7:2222", "[::1]:2222", "bob@[fe80::1]",
    "gpu-box.example.org", "x.y", "a@b", "_svc@node-1", " padded ", "h:65535", "h:1",
])  # fmt: skip
ODD_HOSTS = st.sampled_from([
    "", " ", "user@", "@host", "host:", "host:0", "host:65536", "host:99999", "[::1]",
    "[fe80::1%eth0]", "[zz]", "a b", "-oProxyCommand=touch /tmp/x", "-o@h", "h;rm -rf /",
    "ü@höst", "h" * 300, "user@@host", "user@host:22:22", "h\t", "h.", ".h", "a..b", "host:-1",
    "host:0x16", "::1", "user@[::1", "$(id)@h", "`id`", "h#", "h\\x",
])  # fmt: skip


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A spec the schema accepts (one that no offer or budget admits is possible too)."""
    spec: dict[str, Any] = {}
    if draw(st.booleans()):
        spec["name"] = draw(NAMES)  # else the file's: spec
    if draw(st.booleans()):
        spec["workload"] = draw(st.sampled_from(WORKLOADS))
        if args := draw(st.fixed_dictionaries({}, optional=COMMON_ARGS)):
            spec["args"] = args
    else:
        spec["command"] = draw(TEXT)
        if draw(st.booleans()):
            spec["image"] = draw(st.sampled_from(["pytorch/pytorch:2.3.0", "x", "a b", ""]))
    if draw(st.booleans()):
        spec["runtime"] = draw(st.sampled_from(["auto", "host", "venv", "docker"]))
    providers = draw(st.lists(st.sampled_from(PROVIDERS), min_size=1, max_size=3, unique=True))
    if providers != ["local"] or draw(st.booleans()):
        spec["providers"] = providers
    resources = {
        "gpu": st.sampled_from(["T4", "t4", " A100 ", "a100", "L4"]), "gpus": st.integers(0, 16),
        "cpus": st.integers(1, 512), "memory_gb": st.floats(1e-9, 4096),
        "disk_gb": st.floats(1e-9, 1e5),
    }  # fmt: skip
    if found := draw(st.fixed_dictionaries({}, optional=resources)):
        spec["resources"] = found
    if draw(st.booleans()):
        spec["nodes"] = draw(st.integers(1, 64))
    if draw(st.integers(0, 3)) == 0:
        spec["regions"] = draw(st.lists(st.sampled_from([*REGIONS, "mars-1"]), max_size=3))
    if draw(st.booleans()):
        spec["spot"] = draw(st.booleans())
    if draw(st.integers(0, 3)) == 0:
        budget = {"max_usd": st.floats(0.01, 1e6), "max_hours": st.floats(1e-3, 8784)}
        spec["budget"] = draw(st.fixed_dictionaries({}, optional=budget))
    if {"local", "ssh"} & set(providers) and draw(st.booleans()):
        spec["cost_per_hour"] = draw(st.floats(0, 10_000))
    if draw(st.booleans()):
        src = st.sampled_from(["data", "./data", "data/sub/..", "../specs/data"])
        dst = st.sampled_from(["/data", "/mnt/in put", "/ü/x", "/"])
        spec["dataset"] = draw(st.fixed_dictionaries({"source": src}, optional={"target": dst}))
    if draw(st.booleans()):
        checkpoints = {
            "path": st.sampled_from(["/ckpt", "/tmp/c", "/"]), "keep": st.integers(1, 1000),
            "every_minutes": st.floats(1e-3, 1e4),
        }  # fmt: skip
        spec["checkpoints"] = draw(st.fixed_dictionaries({}, optional=checkpoints))
    if draw(st.booleans()):
        spec["env"] = draw(st.dictionaries(ENV_NAMES, ARG_VALUES, max_size=3))
    if "ssh" in providers or draw(st.integers(0, 9)) == 0:
        ssh = {
            "identity_file": st.sampled_from(["id_key", "./id_key", "data/../id_key"]),
            "workdir": st.sampled_from(["~", "~/gpujobs", "/srv/gpujobs/", "/"]),
            "python": st.sampled_from(["python3", "/usr/bin/python3.11", "py thon"]),
        }
        hosts = st.lists(GOOD_HOSTS, min_size=1, max_size=3, unique=True)
        spec["ssh"] = draw(st.fixed_dictionaries({"hosts": hosts}, optional=ssh))
    return spec


ODD_ARG_NAMES = st.sampled_from(
    [*sorted(RESERVED_ARGS), "checkpoint_every_minutes", "-x", "1a", "", "epochs", "amp", "lr"]
)
ODD_ENV_NAMES = st.sampled_from(
    ["GPUJOBS_X", "GPUJOBS_", "gpujobs_x", "1A", "A-B", "A=B", "", "A B"]
)
# What a mutation may put at each field: the field's own odd values, or anything at all.
HOSTILE: dict[str, st.SearchStrategy[Any]] = {
    "name": TEXT | LONG_TEXT | st.sampled_from(["", "-x", "x-", "A", "a_b", "a" * 41, "ü"]),
    "workload": TEXT | st.sampled_from(["", "common", "../mnist_cnn", "jobs/mnist_cnn", "MNIST"]),
    "command": TEXT | LONG_TEXT | JUNK,
    "image": TEXT | JUNK,
    "runtime": st.sampled_from(["", "kubernetes", "Docker", "auto ", "none"]) | JUNK,
    "args": st.dictionaries(ODD_ARG_NAMES | KEY_TEXT, JUNK, max_size=3),
    "resources.gpu": GPU_NAMES | TEXT | LONG_TEXT | JUNK,
    "resources.gpus": NUMBERS,
    "resources.cpus": NUMBERS,
    "resources.memory_gb": NUMBERS,
    "resources.disk_gb": NUMBERS,
    "nodes": NUMBERS | JUNK,
    "providers": st.lists(st.sampled_from([*PROVIDERS, "azure", "LOCAL", "", "ssh "]), max_size=4),
    "regions": st.lists(TEXT | NUMBERS, max_size=4) | JUNK,
    "spot": st.sampled_from(["yes", "no", "on", "true", "1", 2, "True", ""]) | JUNK,
    "budget": JUNK,
    "budget.max_usd": NUMBERS | JUNK,
    "budget.max_hours": NUMBERS | JUNK,
    "cost_per_hour": NUMBERS,
    "dataset": JUNK,
    "dataset.source": BAD_PATHS | ODD_PATHS | TEXT | LONG_TEXT | JUNK,
    "dataset.target": ODD_PATHS | JUNK,
    "checkpoints.path": ODD_PATHS | JUNK,
    "checkpoints.every_minutes": NUMBERS,
    "checkpoints.keep": NUMBERS,
    "env": st.dictionaries(ODD_ENV_NAMES | KEY_TEXT, JUNK, max_size=3),
    "ssh": JUNK,
    "ssh.hosts": st.lists(ODD_HOSTS | GOOD_HOSTS | TEXT, max_size=4) | JUNK,
    "ssh.identity_file": BAD_PATHS | ODD_PATHS | TEXT | LONG_TEXT | JUNK,
    "ssh.workdir": ODD_PATHS | JUNK,
    "ssh.python": JUNK,
}
FIELDS = sorted(HOSTILE)


def _parent(spec: dict[str, Any], path: str) -> tuple[dict[Any, Any], str]:
    """The mapping that holds `path`'s last part (made, or put in place of a non-mapping)."""
    *parents, last = path.split(".")
    holder = spec
    for part in parents:
        if not isinstance(holder.get(part), dict):
            holder[part] = {}
        holder = holder[part]
    return holder, last


def set_field(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    path = draw(st.sampled_from(FIELDS))
    holder, key = _parent(spec, path)
    holder[key] = draw(HOSTILE[path])


def drop_field(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    path = draw(st.sampled_from(["name", "workload", "command", "ssh", "dataset.source", *FIELDS]))
    holder, key = _parent(spec, path)
    holder.pop(key, None)


def unknown_key(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    where = draw(st.sampled_from(["", "resources", "budget", "dataset", "checkpoints", "ssh"]))
    holder = _parent(spec, f"{where}.x")[0] if where else spec
    holder[draw(KEYS)] = draw(JUNK)


def both_entry_points(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    spec["workload"] = draw(st.sampled_from(WORKLOADS))
    spec["command"] = draw(TEXT)
    if draw(st.booleans()):
        spec["args"] = {"epochs": 1}


# safe_dump recurses per level: deeper nesting goes in as a placeholder that structured_specs
# writes out as flow YAML, `{a: ` or `[{a: ` so many times. (Not `[` alone: PyYAML's scanner
# rechecks every open `[` at each token, up to 2 s for a deep one; nested_specs and the
# explicit examples have those.)
DEEP = re.compile(r"zzdeep-(\d+)-(map|both)")
DEEP_BRACKETS = {"map": ("{a: ", "}"), "both": ("[{a: ", "}]")}


def deep_nesting(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """A field's value in 1 to 60 lists and mappings, or, one time in five (for time), nothing
    but 61 to 2,000 of them."""
    path = draw(st.sampled_from(FIELDS))
    holder, key = _parent(spec, path)
    depth = draw(st.integers(61, 2_000) if draw(st.integers(0, 4)) == 0 else st.integers(1, 60))
    if depth > 60:
        holder[key] = f"zzdeep-{depth}-{draw(st.sampled_from(sorted(DEEP_BRACKETS)))}"
        return
    value = holder.get(key, "x")
    for _ in range(depth):
        value = [value] if draw(st.booleans()) else {"a": value}
    holder[key] = value


def deep_flow(found: re.Match[str]) -> str:
    opener, closer = DEEP_BRACKETS[found.group(2)]
    return f"{opener * int(found.group(1))}x{closer * int(found.group(1))}"


def shared_value(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """One list or mapping under two or three fields: safe_dump writes an anchor and aliases (a
    mapping under itself, as at `ssh` and then `ssh.hosts`, holds itself)."""
    shared = draw(st.lists(TEXT, max_size=3) | st.dictionaries(ENV_NAMES, TEXT, max_size=3))
    for path in draw(st.lists(st.sampled_from(FIELDS), min_size=2, max_size=3, unique=True)):
        holder, key = _parent(spec, path)
        holder[key] = shared


def self_holding(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """A list or mapping inside itself: safe_dump writes an alias inside its own anchor."""
    holder, key = _parent(spec, draw(st.sampled_from(FIELDS)))
    value: Any = [draw(TEXT)] if draw(st.booleans()) else {draw(KEYS): draw(TEXT)}
    if isinstance(value, list):
        value.append(value)
    else:
        value[draw(KEYS)] = value
    holder[key] = value


def bad_local_path(draw: st.DrawFn, spec: dict[str, Any]) -> None:
    """A path the OS refuses where the spec names a file or folder on this machine."""
    path = draw(st.sampled_from(["dataset.source", "ssh.identity_file"]))
    holder, key = _parent(spec, path)
    holder[key] = draw(BAD_PATHS)
    if path.startswith("ssh."):
        holder.setdefault("hosts", ["h"])


MUTATIONS: list[Callable[[st.DrawFn, dict[str, Any]], None]] = [
    set_field, set_field, set_field, drop_field, unknown_key, both_entry_points, deep_nesting,
    shared_value, self_holding, bad_local_path,
]  # fmt: skip


@st.composite
def structured_specs(draw: st.DrawFn) -> bytes:
    """A valid spec with up to four mutations (none, for about a third), in a random YAML style:
    block or flow, any width and indent, CRLF or CR, markers, and now and then a key twice."""
    spec = draw(valid_specs())
    for _ in range(draw(st.sampled_from([0, 0, 0, 1, 1, 2, 3, 4]))):
        draw(st.sampled_from(MUTATIONS))(draw, spec)
    text = yaml.safe_dump(
        spec, sort_keys=draw(st.booleans()), allow_unicode=draw(st.booleans()),
        default_flow_style=draw(st.sampled_from([False, None, True])),
        width=draw(st.sampled_from([20, 80, 10**6])), indent=draw(st.sampled_from([2, 4, 7])),
        explicit_start=draw(st.booleans()), explicit_end=draw(st.booleans()),
        line_break=draw(st.sampled_from(["\n", "\r\n", "\r"])),
    )  # fmt: skip
    top_keys = [line for line in text.splitlines(True) if re.match(r"[A-Za-z_]\w*:", line)]
    if top_keys and draw(st.integers(0, 9)) == 0:
        text += draw(st.sampled_from(top_keys))
    if draw(st.integers(0, 9)) == 0:
        text = draw(st.sampled_from(["\ufeff", "# a comment\n", "%YAML 1.1\n---\n"])) + text
    return DEEP.sub(deep_flow, text).encode()


# -- hostile raw YAML -----------------------------------------------------------------------------
# Random text holds any character UTF-8 can carry, those YAML may not carry raw (NUL, \x01,
# \x7f, \ufffe, ...) among them.
YAML_TEXT = st.text(st.characters(codec="utf-8"), max_size=300)
BASE = b"name: fuzz\ncommand: train\nproviders: [local, aws]\nresources: {gpu: T4, gpus: 1}\n"
TOKENS = [
    "name: fuzz", "command: train", "workload: mnist_cnn", "args:", "  epochs: 1", "  - a", "- b",
    "  ", "\t", "? a", ": b", "{", "}", "[", "]", ",", ":", "&a", "*a", "&b x", "*b", "<<: *a",
    "<<: {name: m}", "---", "...", "#", "'", '"', "|", ">-", "%YAML 1.1", "~", "null", "nodes: 2",
    "env: {A: 1}", "resources:", "  gpu: T4", "ssh: {hosts: [h]}", "providers:", "  - ssh",
    "regions: []", "\ufeff", "é", "日本", "\u2028", "\x85", "0x1F", "0o17", ".inf", "-.inf", ".nan",
    "1e999", "yes", "no", "2001-12-14", "12:30:00", "? [a]", "? {a: 1}", "[a]: b", "&c [*c]",
    "&d {k: *d}", "!foo", "!!python/name:os.system", "\x00", "\x01", "\x1b", "\x7f", "\ufffe",
]  # fmt: skip
# Tags that construct, and tags that cannot (unknown, unsafe, or not the value's type).
TAGGED = [
    "command: !!str 1", "nodes: !!int 3", "nodes: !!int 0x10", "spot: !!bool true",
    "nodes: !!float 2.0", "name: !!str fuzz", "regions: !!seq [a]", "budget: !!map {max_usd: 2}",
    "env: !!map {A: !!binary aGk=}", "command: !!binary aGVsbG8=", "spot: !!null ''",
    "args: !!omap [a: 1]", "regions: !!set {a, b}", "command: !!timestamp 2001-12-14",
    "nodes: !!float .inf", "image: !!str", "resources: !!map {}",
    "env: !<tag:yaml.org,2002:map> {}", "foo: !!python/object:os.system x", "command: !!int abc",
    "command: !!bool maybe", "command: !custom x", "<<: 3", "<<: [1, 2]", "nodes: !!float x",
    "command: !!binary '!!'", "nodes: !!timestamp 2001-13-45", "args: !!omap {a: 1}",
    "regions: !!set [a]", "command: !!python/name:os.system", "env: !!map [a]",
    "budget: !!seq {a: 1}", "spot: !!null x", "nodes: !!int 0b2",
]  # fmt: skip
NASTIES = [
    b"", b"\n", b"   ", b"#", b"---", b"...", b"--- \n...\n---\n", b"---\n---\n", b"~", b"null",
    b"[]", b"{}", b"- - -", b"\xef\xbb\xbf", b"\xef\xbb\xbfname: x\ncommand: y\n",
    "name: x\ncommand: y\n".encode("utf-16"), "name: x\ncommand: y\n".encode("utf-32"), b"*a",
    b"&a", b"&a a: 1", b"a: &a 1\nb: &a 2\n", b"name: &n x\ncommand: *n\n",
    b"<<: {name: merged, command: train}\n", b"<<: [{name: m}, {command: t}]\n",
    b"base: &b {command: t}\n<<: *b\n", b"%YAML 1.1\n---\nname: x\ncommand: y\n",
    b"%YAML 2.0\n---\n{}\n", b"%FOO bar\n---\n{}\n", b"name: x\n\tcommand: y\n", b"name: [x\n",
    b"'", b'"\\x"', b'"\\uZZZZ"', b"name: x\ncommand: y\nnodes: 0o17\n", b"nodes: 1_000\n",
    b"name: x\ncommand: y\nspot: yes\n", b"name: x\ncommand: y\nregions: [Norway, NO]\n",
    b"name: 2024-01-01\n", b"name: 1e3\n", b"? a\n: b\n", b"a:\n  - b\n  c: d\n", b"a: b: c",
    b"{a: 1, a: 2}", b"name: x\r\ncommand: y\r\n", b"name: x\rcommand: y\r",
    b"command: |\n  a\n b\n", b"command: >\n\n\n", b"command: 'a''b'\n",
    b'name: x\ncommand: "\\0\\a\\e\\N\\_\\L\\P\\x7f"\n', b'name: x\ncommand: "\\U0001F600"\n',
    b'command: y\nname: "\\x41"\n', b'name: x\ncommand: y\nenv: {A: "\\0"}\n',
    b"- name: x\n  command: y\n", b"name: x\ncommand: y\n...\n" + b"\n" * 1000 + b"garbage: [",
    b"name: x\ncommand: y\nnodes: " + b"9" * 4000 + b"\n", b"name: x\ncommand: y\n" + b" " * 10**4,
]  # fmt: skip


@st.composite
def spliced_specs(draw: st.DrawFn) -> bytes:
    """A valid spec with random text put in, a slice cut out, or the end cut off."""
    text = BASE.decode()
    at = draw(st.integers(0, len(text)))
    how = draw(st.sampled_from(["insert", "cut", "truncate"]))
    if how == "insert":
        text = text[:at] + draw(YAML_TEXT) + text[at:]
    elif how == "cut":
        text = text[:at] + text[at + draw(st.integers(1, 20)) :]
    else:
        text = text[:at]
    return text.encode()


@st.composite
def token_soup(draw: st.DrawFn) -> bytes:
    joiner = draw(st.sampled_from(["\n", " ", "", "\n  "]))
    return joiner.join(draw(st.lists(st.sampled_from(TOKENS), max_size=25))).encode()


@st.composite
def tagged_specs(draw: st.DrawFn) -> bytes:
    lines = draw(st.lists(st.sampled_from(TAGGED), min_size=1, max_size=3, unique=True))
    return ("name: fuzz\n" + "\n".join(lines) + "\n").encode()


def alias_chain(levels: int, width: int, leaf: str) -> str:
    """`levels` anchors in a flow list, each a list of `width` aliases of the one before."""
    chain = [f"&a0 [{', '.join([leaf] * width)}]"]
    chain += [f"&a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, levels)]
    return f"[{', '.join(chain)}]"


def alias_bomb(levels: int, width: int = 9, *, holder: str = "zz", used_at: str = "") -> bytes:
    """Billion laughs: width ** levels leaves from a few hundred bytes."""
    use = f"{used_at}: *a{levels - 1}\n" if used_at else ""
    return f"name: bomb\ncommand: x\n{holder}: {alias_chain(levels, width, 'lol')}\n{use}".encode()


def wide_value() -> bytes:
    """Five 60-character keys and one 62-character string, each written once, aliased into a
    list of 5 mappings of 5 mappings of 5 strings: the value reprlib shows longest."""
    keys = ", ".join(f"&k{n} {'k' * 58}{n}" for n in range(5))
    inner = ", ".join(f"*k{n} : *s" for n in range(5))
    outer = ", ".join(f"*k{n} : *b" for n in range(5))
    return (
        f"command: x\nv: &s {'s' * 62}\nkeys: [{keys}]\nb: &b {{{inner}}}\nc: &c {{{outer}}}\n"
        "nodes: [*c, *c, *c, *c, *c]\n"
    ).encode()


@st.composite
def alias_specs(draw: st.DrawFn) -> bytes:
    """An alias bomb of up to 10 levels of 10, defined under one field and used under another
    (or the same one): small ones load, and big ones are refused however they are used."""
    levels, width = draw(st.integers(1, 10)), draw(st.integers(1, 10))
    leaf = draw(st.sampled_from(["lol", "1", "{a: 1}", "[]", "~", "us-east-1"]))
    fields = ["zz", "regions", "providers", "env", "args", "nodes", "resources", "ssh", "name"]
    defined_at, used_at = draw(st.sampled_from(fields)), draw(st.sampled_from(fields))
    chain = alias_chain(levels, width, leaf)
    return f"command: train\n{defined_at}: {chain}\n{used_at}: *a{levels - 1}\n".encode()


@st.composite
def invalid_utf8(draw: st.DrawFn) -> bytes:
    data = draw(st.binary(max_size=200) | st.just(BASE))
    at = draw(st.integers(0, len(data)))
    return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"])) + data[at:]


@st.composite
def nested_specs(draw: st.DrawFn) -> bytes:
    # Past ~300 levels: refused as nested too deeply, after up to a second of scanning a deep
    # `[`; one time in five, for time.
    depth = draw(st.integers(301, 5_000) if draw(st.integers(0, 4)) == 0 else st.integers(1, 300))
    field = draw(st.sampled_from(["zz", "regions", "env", "args", "resources", "nodes", "ssh"]))
    opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}"), ("[{a: ", "}]")]))
    return f"name: fuzz\ncommand: train\n{field}: {opener * depth}x{closer * depth}\n".encode()


@st.composite
def reindented_specs(draw: st.DrawFn) -> bytes:
    """A block-style spec whose lines lose, gain or swap indentation, tabs among it."""
    lines = yaml.safe_dump(draw(valid_specs()), default_flow_style=False).splitlines()
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(lines) - 1))
        indent = draw(st.sampled_from(["", " ", "\t", "   ", "\t  ", "        "]))
        lines[at] = indent + lines[at].lstrip(" ")
    return ("\n".join(lines) + "\n").encode()


RAW_SPECS = st.one_of(
    YAML_TEXT.map(str.encode),
    spliced_specs(),
    token_soup(),
    tagged_specs(),
    alias_specs(),
    invalid_utf8(),
    JUNK.map(lambda value: yaml.safe_dump(value).encode()),  # any top level: scalar, list, ...
    nested_specs(),
    reindented_specs(),
    st.sampled_from(NASTIES),
)


@st.composite
def large_specs(draw: st.DrawFn) -> bytes:
    size = draw(st.integers(50_000, 500_000))
    kind = draw(st.sampled_from(["comment", "command", "keys", "regions", "env", "hex"]))
    if kind == "comment":
        return BASE + b"# " + b"x" * size + b"\n"
    if kind == "command":
        return b"name: big\ncommand: '" + b"y" * size + b"'\n"
    if kind == "keys":
        return BASE + b"".join(b"k%d: %d\n" % (n, n) for n in range(size // 12))
    if kind == "regions":
        return BASE + b"regions: [" + b"us-east-1, " * (size // 11) + b"]\n"
    if kind == "env":
        variables = b"".join(b"  V%d: x\n" % n for n in range(size // 10))
        return b"name: big\ncommand: y\nenv:\n" + variables
    return draw(st.binary(min_size=16, max_size=16)).hex().encode() * (size // 32)


# -- the properties -------------------------------------------------------------------------------
# Specs that fuzzing found breaking the one-error-line rule before gpujobs/spec.py, budget.py and
# budget_advice.py were hardened, and what their one error line now says.
ONCE_BROKEN = [
    # A tag that cannot be built, or an int too long to read.
    (b"name: ok\ncommand: x\nfoo: !!python/object:os.system x\n", "bad YAML"),
    (b"name: ok\ncommand: !!int abc\n", "bad YAML"),
    (b"name: ok\ncommand: !!bool maybe\n", "bad YAML"),
    (b"name: ok\ncommand: !custom x\n", "bad YAML"),
    (b"<<: 3\n", "bad YAML"),
    (b"name: ok\ncommand: x\nnodes: " + b"9" * 5000 + b"\n", "bad YAML"),
    # Keys that are not plain scalars, aliases that hold themselves, a billion laughs.
    (b"{[a]: b}\n", "a key must be a plain name"),
    (b"name: ok\ncommand: x\n? {a: 1}\n: b\n", "a key must be a plain name"),
    (b"a: &a [*a]\n", "an alias holds itself"),
    (b"budget: &b\n  max_hours: *b\n", "an alias holds itself"),
    (alias_bomb(5, holder="regions", used_at="nodes"), "expand it past 20,000 values"),
    # Nesting past the recursion limit, characters YAML may not carry raw.
    (b"name: ok\ncommand: x\nzz: " + b"[" * 2000 + b"]" * 2000 + b"\n", "nested too deeply"),
    (b"name: ok\ncommand: x\nzz: " + b"{a: " * 2000 + b"}" * 2000 + b"\n", "nested too deeply"),
    (b"name: ok\ncommand: x\nz: \x01\n", "cannot be in a YAML file"),
    (b"name: ok\x00\n", "cannot be in a YAML file"),
    # A value grown by aliases, shown short.
    (alias_bomb(4, holder="regions", used_at="nodes"), "nodes: input should be a valid integer"),
    # Keys and GPU names holding a newline or an escape sequence.
    (b'command: x\n"a\\nb": 1\n', "'a\\nb': unknown field"),
    (b'command: x\nenv: {"A\\rB": [1]}\n', "env.'A\\rB'"),
    (b'command: x\n"k\\e[31m": 1\n"k\\e[31m": 2\n', "'k\\x1b[31m': given twice"),
    (b'command: x\nresources: {gpu: "T\\n4"}\n', "is not a GPU model name"),
    (b'command: x\nresources: {gpu: "T4\\e[2J"}\n', "is not a GPU model name"),
    # Local paths the OS refuses.
    (b'command: x\ndataset: {source: "data\\0"}\n', "dataset.source: 'data\\x00'"),
    (b"command: x\ndataset: {source: ~gpujobs-no-such-user/data}\n", "not a usable path"),
    (b"command: x\nproviders: [ssh]\nssh: {hosts: [h], identity_file: " + b"k" * 300 + b"}\n",
     "is not a file"),
    # Lone surrogates.
    (b'command: "\\ud800"\n', "lone UTF-16 surrogate"),
    (b'workload: transfer\nargs: {weights: "\\udfff"}\n', "lone UTF-16 surrogate"),
    (b'command: x\nproviders: [ssh]\nssh: {hosts: [h], workdir: "/\\ud800"}\n', "surrogate"),
    # Budgets no timer can be set from, and whose refusal advice overflowed.
    (b"command: x\nproviders: [aws]\nbudget: {max_hours: .inf, max_usd: 1}\n", "budget.max_hours"),
    (b"command: x\nproviders: [aws]\nnodes: 2\nbudget: {max_hours: 1e308, max_usd: 1}\n",
     "budget.max_hours"),
    (b"command: x\nproviders: [aws]\nbudget: {max_usd: 1e-310, max_hours: 1}\n", "budget.max_usd"),
    (b"command: x\nproviders: [aws]\nbudget: {max_usd: .inf}\n", "budget.max_usd"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "says"), ONCE_BROKEN, ids=[f"{n}-{says}" for n, (_, says) in enumerate(ONCE_BROKEN)]
)
def test_specs_that_once_broke_launch_are_refused_in_one_line(
    launcher: Launcher, spec: bytes, says: str
) -> None:
    outcome = launcher.check(spec)
    assert outcome.exit_code == EXIT_BAD_INPUT, outcome.stderr
    assert says in outcome.stderr, outcome.stderr
    assert len(outcome.stderr) < 1_500, outcome.stderr


@settings(FUZZ, max_examples=500)
@given(spec=structured_specs())
# Valid: a job, its every placement out of capacity, exit 1.
@example(spec=b"name: ok\nworkload: mnist_cnn\nargs: {epochs: 1, amp: true}\n")
@example(spec=b"command: x\nproviders: [ssh, aws]\nssh: {hosts: ['[::1]:2222', a@b]}\n")
@example(spec=b'command: x\ndataset: {source: data/sub/..}\nenv: {A: "x\\ny", B: 1e9}\n')
@example(spec=b"command: x\nbudget: {max_hours: 1e-300}\nproviders: [aws]\nnodes: 64\n")
@example(spec=b"command: x\nbudget: {max_hours: 8784, max_usd: 1000000}\nproviders: [aws]\n")
@example(spec=b"command: x\nresources: {gpu: t4, gpus: 16, memory_gb: 4096}\n")
# Refused in one line: reserved flags, GPUJOBS_ names, ssh options as hosts, budgets, NaN.
@example(spec=b"workload: mnist_cnn\nargs: {checkpoint_every_minutes: 1}\n")
@example(spec=b"command: x\nenv: {GPUJOBS_JOB_ID: mine}\n")
@example(spec=b"command: x\nproviders: [ssh]\nssh: {hosts: ['-oProxyCommand=touch /tmp/x']}\n")
@example(spec=b"command: x\nproviders: [aws]\nbudget: {max_usd: 1, max_hours: 10}\n")
@example(spec=b"command: x\nproviders: [aws]\nbudget: {max_usd: 0.01, max_hours: 1}\n")
@example(spec=b"command: x\nnodes: .nan\nresources: {memory_gb: .inf}\n")
@example(spec=b"command: x\nresources: {memory_gb: .inf}\n")
@example(spec=b"command: x\nenv: {B: .inf}\n")
@example(spec=b"command: x\ndataset: {source: s3://bucket/data}\n")
@example(spec=b"command: x\ndataset: {source: ../../../../../../nonexistent}\n")
@example(spec=b"command: x\nproviders: [ssh]\nssh: {hosts: [h], identity_file: data}\n")
@example(spec=b"command: x\nproviders: [aws]\nbudget: {max_usd: 10000}\n")  # cap > 8784 h
def test_structured_specs_end_in_a_job_or_one_error_line(launcher: Launcher, spec: bytes) -> None:
    event(f"exit {launcher.check(spec).exit_code}")


@settings(FUZZ, max_examples=400)
@given(spec=RAW_SPECS)
# Handled: alias bombs big and small, nesting, tabs, encodings.
@example(spec=alias_bomb(6))
@example(spec=alias_bomb(10, 10, holder="env", used_at="regions"))
@example(spec=b"name: x\ncommand: y\nzz: " + b"[" * 60 + b"]" * 60 + b"\n")
@example(spec=b"name: x\ncommand: y\nregions: " + b"[{a: " * 5000 + b"}]" * 5000 + b"\n")
@example(spec=b"\tname: x\n")
@example(spec=b"\xff\xfe\x00")
@example(spec=b"name: x\ncommand: y\nnodes: *nothing\n")
@example(spec=b"- a\n- b\n")
@example(spec=b"3.14\n")
@example(spec=wide_value())  # a value shown in an error is cut as a whole
def test_hostile_yaml_ends_in_a_job_or_one_error_line(launcher: Launcher, spec: bytes) -> None:
    event(f"exit {launcher.check(spec).exit_code}")


@settings(FUZZ, max_examples=12)
@given(spec=large_specs())
def test_large_specs_end_in_a_job_or_one_error_line(launcher: Launcher, spec: bytes) -> None:
    event(f"exit {launcher.check(spec).exit_code}")


def test_an_alias_bomb_is_refused_at_once(tmp_path: Path) -> None:
    """Ten levels of nine aliases (a 500-byte file, 9^10 values) under an unknown key: refused
    from its node graph, walked once per node, without expanding it. In a child process, so that
    the timeout can end it; the interpreter starts and refuses it in well under a second."""
    bomb = tmp_path / "bomb.yaml"
    bomb.write_bytes(alias_bomb(10))
    done = gpujobs_cli("launch", str(bomb), timeout=10)
    assert done.returncode == EXIT_BAD_INPUT, done.stderr
    assert "its aliases expand it past 20,000 values" in one_error_line(done.stderr)


@pytest.mark.parametrize(
    "budget",
    ["{max_hours: .inf}", "{max_usd: .inf}", "{max_hours: .nan}", "{max_hours: 8785}",
     "{max_hours: 1e308}", "{max_usd: 1e-310}", "{max_usd: 1000001}"],
)  # fmt: skip
def test_a_budget_no_timer_can_be_set_from_is_refused_at_load(tmp_path: Path, budget: str) -> None:
    """An infinite or absurd budget is refused when the spec loads, before any provider sees it
    (an infinite one used to reach providers/cloud.py's math.ceil and fail every cloud node)."""
    text = f"name: forever\ncommand: train\nproviders: [aws]\nbudget: {budget}\n"
    with pytest.raises(SpecError) as refused:
        parse_spec(text, label="forever.yaml", base_dir=tmp_path)
    message = str(refused.value)
    assert message.startswith("forever.yaml:4: budget.max_"), message
    assert "\n" not in message and len(message) < 300, message


@pytest.mark.parametrize(
    "budget", ["{max_hours: 8784}", "{max_usd: 0.01, max_hours: 0.001}", "{max_usd: 1000000}"]
)
def test_an_accepted_budget_gives_cloud_nodes_a_shutdown_timer(tmp_path: Path, budget: str) -> None:
    """A spec that loads can be provisioned on a cloud: the node's shutdown timer is set from the
    hours of the job's cap there (what lifecycle._provider_for hands the provider). The scripted
    providers above never get that far, so this asks the cloud bootstrap directly."""
    text = f"name: forever\ncommand: train\nproviders: [aws]\nbudget: {budget}\n"
    spec = parse_spec(text, label="forever.yaml", base_dir=tmp_path)
    cap = cap_for(spec, scripted_offers("aws")[0], None)
    assert isinstance(cap, JobCap), cap
    bootstrap = Bootstrap("forever-000000", CloudNodeSettings(), cap.hours)
    assert bootstrap.shutdown_minutes is not None and bootstrap.shutdown_minutes > 1
    assert f"{bootstrap.shutdown_minutes}" in bootstrap.render()
