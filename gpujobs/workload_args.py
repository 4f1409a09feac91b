"""A spec's `args` checked against the bundled workload's own argparse parser, at plan time.

A misspelled or mistyped flag would otherwise be found by the workload on a provisioned node.
Each workload's parser (`jobs.<name>.cli.build_parser`) is described by
`jobs.common.cli.describe_parser`, and every value goes through its option's argparse `type`,
so the workload's own rules (positive_int, fraction, ...) apply before anything is started.

A workload may also have advice for a spec's args (`plan_notes`, e.g. transfer without weights
trains from scratch): `workload_notes` collects it, and launch and plan print it as warnings.

How a value becomes the flag's text (`flag_text`), the one rule for spec.workload_flags too:
true passes a switch, false leaves it out; a list is joined with commas, which only flags whose
`type` reads a comma list accept (`jobs.common.cli.comma_list`, e.g. mnist_cnn's
--class-weights); anything else is its str().

Ground floor: imports only gpujobs.errors and the standard library; `jobs` lazily.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import reprlib
from collections.abc import Collection, Iterable, Mapping
from functools import cache
from types import ModuleType
from typing import TYPE_CHECKING, Any

from gpujobs.errors import BadInputError

if TYPE_CHECKING:
    from jobs.common.cli import ArgInfo

_KIND_WORDS = {
    "int": "an integer",
    "float": "a number",
    "str": "a string",
    "path": "a path",
    "flag": "true or false",
}
# What argparse takes as a value rather than a flag although it starts with '-' (3.11's rule).
_NEGATIVE_NUMBER = re.compile(r"^-\d+$|^-\d*\.\d+$")
# Examples tried in turn when an option has no default, so the hint passes the option's type.
_EXAMPLES = {"int": ("10", "100", "1"), "float": ("0.1", "0.5", "1.0")}
# Checked before the option's own type, so a word is "not an integer" rather than out of range.
_BASE_TYPES = {"int": int, "float": float}
_YAML_SWITCH_WORDS = "YAML reads yes/no/on/off as true/false: quote them"
_MAX_PROBLEM = 300  # a workload's message repeats the value: keep the line short
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 60
_SHORT.maxlist = 5


class WorkloadArgError(BadInputError):
    """One bad entry of a spec's `args`: `key` as the spec spells it, `problem` what is wrong
    and what to write instead."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"args.{key}: {problem}")
        self.key = key
        self.problem = problem


def _cli_module(workload: str) -> ModuleType | None:
    """`jobs.<workload>.cli`, or None for a workload without one. Importing a cli module is
    cheap: they import torch only when they run."""
    module_name = f"jobs.{workload}.cli"
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name in (module_name, f"jobs.{workload}"):
            return None
        raise


@cache
def workload_arguments(workload: str) -> dict[str, ArgInfo] | None:
    """The options of bundled workload `workload` by spec key (image_size), from its
    `jobs.<workload>.cli.build_parser()`; None for a workload without one (a folder someone
    added to jobs/), whose args then go unchecked."""
    module = _cli_module(workload)
    build_parser = getattr(module, "build_parser", None)
    if build_parser is None:
        return None
    from jobs.common.cli import describe_parser

    return {info.name: info for info in describe_parser(build_parser())}


def check_args(
    workload: str, args: Mapping[str, object], *, reserved: Collection[str] = ()
) -> None:
    """Raise WorkloadArgError for the first entry of `args` that `workload` would refuse.

    `reserved`: flag names (checkpoint-every-minutes) that gpujobs sets itself; they are never
    offered as a fix. Prefixes argparse would expand (--image for --image-size) are refused:
    a later flag could make them ambiguous.
    """
    known = workload_arguments(workload)
    if known is None:
        return
    offered = {name: info for name, info in known.items() if info.flag[2:] not in reserved}
    seen: dict[str, str] = {}
    for key, value in args.items():
        name = key.replace("-", "_")
        info = known.get(name)
        if info is None:
            raise WorkloadArgError(key, _unknown(workload, name, sorted(offered)))
        if name in seen:
            raise WorkloadArgError(key, f"given twice (also as {seen[name]}); keep one")
        seen[name] = key
        problem = _problem(info, value)
        if problem is not None:
            raise WorkloadArgError(key, _cut(problem))


def workload_notes(workload: str, args: Mapping[str, object]) -> list[str]:
    """What the workload wants a person told before anything is rented for these args, from
    its `jobs.<workload>.cli.plan_notes(args)` (keys as spec keys, image_size): advice, not
    errors (e.g. transfer without weights trains from scratch). Empty where it has none."""
    plan_notes = getattr(_cli_module(workload), "plan_notes", None)
    if plan_notes is None:
        return []
    return [str(note) for note in plan_notes({k.replace("-", "_"): v for k, v in args.items()})]


def flag_text(value: object) -> str:
    """The command-line text of a non-switch value: a list joined with commas."""
    if isinstance(value, list | tuple):
        return ",".join(str(item) for item in value)
    return str(value)


def _unknown(workload: str, name: str, offered: list[str]) -> str:
    close = difflib.get_close_matches(name, offered, n=1)
    if close:
        return f"unknown argument for {workload}; did you mean {close[0]}?"
    return f"unknown argument for {workload}; its arguments: {', '.join(offered)}"


def _problem(info: ArgInfo, value: object) -> str | None:
    """What is wrong with `value` for `info`, with the fix; None when the workload takes it."""
    name = info.name
    if info.kind == "flag":
        if isinstance(value, bool):
            return None
        return (
            f"{_show(value)} is not true or false: {name} is a switch "
            f"(true passes {info.flag}, false leaves it out)"
        )
    wants = _wants(info)
    if isinstance(value, bool):
        hint = f" ({_YAML_SWITCH_WORDS})" if info.kind in ("str", "choice", "path") else ""
        return f"{_show(value)} is a switch value, but {name} takes {wants}{hint}{_eg(info)}"
    if isinstance(value, list | tuple) and not info.comma_list:
        return f"{_show(value)} is a list, but {name} takes one value, {wants}{_eg(info)}"
    text = flag_text(value)
    if "\0" in text:
        return f"{_show(value)} holds a NUL character, which no command line can carry"
    if text.startswith("-") and not _NEGATIVE_NUMBER.match(text):
        return (
            f"{_show(value)} starts with '-', so the workload would read it as a flag; "
            f"give {wants}{_eg(info)}"
        )
    base = _BASE_TYPES.get(info.kind) if not info.choices else None
    if base is not None and not _parses(base, text):
        return f"{_show(value)} is not {wants}{_eg(info)}"
    try:
        converted = info.parse(text) if info.parse is not None else text
    except argparse.ArgumentTypeError as exc:  # the workload's own words
        return f"{exc}{_eg(info)}"
    except (TypeError, ValueError):  # argparse reports these as "invalid <type> value"
        return f"{_show(value)} is not {wants}{_eg(info)}"
    if info.choices and converted not in info.choices:
        return f"{_show(value)} is not {wants}"
    return None


def _parses(base: type, text: str) -> bool:
    try:
        base(text)
    except ValueError:  # also int's limit on digits
        return False
    return True


def _wants(info: ArgInfo) -> str:
    if info.choices:
        return "one of " + ", ".join(str(choice) for choice in info.choices)
    words = _KIND_WORDS.get(info.kind, "a value")
    return f"{words} or a list of them (joined with commas)" if info.comma_list else words


def _eg(info: ArgInfo) -> str:
    example = _example(info)
    return f"; e.g. {info.name}: {example}" if example is not None else ""


def _example(info: ArgInfo) -> str | None:
    """A value the option takes: its default, else one of a few plain ones its type accepts."""
    if info.choices:
        return None  # the message lists them
    if info.default is not None:
        return str(info.default)
    for candidate in _EXAMPLES.get(info.kind, ()):
        try:
            if info.parse is not None:
                info.parse(candidate)
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            continue
        return candidate
    return None


def _show(value: object) -> str:
    """A spec value as the user wrote it in YAML, bounded and with control characters
    escaped (an error line must stay one short line)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return _SHORT.repr(value)


def _cut(text: str) -> str:
    return text if len(text) <= _MAX_PROBLEM else text[: _MAX_PROBLEM - 3] + "..."


# -- the JSON Schema of `args` per workload, for editors ------------------------------------------


def args_json_schema(workloads: Iterable[str], *, reserved: Collection[str] = ()) -> list[dict]:
    """For `allOf` in the spec's JSON Schema: for each workload with a parser, `if workload is
    X then args has X's properties`, so editors complete and flag argument names. Names are
    offered in the templates' spelling (image_size); the dashed one (image-size) is allowed."""
    rules = []
    for workload in workloads:
        known = workload_arguments(workload)
        if known is None:
            continue
        offered = [info for info in known.values() if info.flag[2:] not in reserved]
        names = [info.name for info in offered]
        rules.append(
            {
                "if": {"properties": {"workload": {"const": workload}}, "required": ["workload"]},
                "then": {
                    "properties": {
                        "args": {
                            "properties": {info.name: _property(info) for info in offered},
                            "propertyNames": {
                                "enum": names + [name.replace("_", "-") for name in names]
                            },
                        }
                    }
                },
            }
        )
    return rules


def _property(info: ArgInfo) -> dict[str, Any]:
    schema: dict[str, Any]
    if info.kind == "flag":
        schema = {"type": "boolean"}
    elif info.choices:
        schema = {"enum": list(info.choices)}
    else:
        one = {"int": {"type": "integer"}, "float": {"type": "number"}}.get(
            info.kind, {"type": "string"}
        )
        schema = {"anyOf": [one, {"type": "array"}]} if info.comma_list else dict(one)
    if info.help:
        schema["description"] = info.help
    if isinstance(info.default, bool | int | float | str):
        schema["default"] = info.default
    return schema
