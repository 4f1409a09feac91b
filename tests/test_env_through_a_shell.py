"""Generated `env:` values go all the way to a real shell on the local provider and arrive
literally (issue 24): the spec's YAML, the 0600 env file the launch script sources, the shell,
the workload. Quotes, `$(...)`, backticks, backslashes, newlines, globs and unicode included."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import gpujobs_cli

# What a shell would act on if the env file did not quote it, plus ordinary text.
_NASTY = st.sampled_from(
    ["'", '"', "$(touch PWNED)", "`touch PWNED`", "$HOME", "\\", "\n", "*", ";", "|", "&",
     "#", "~", "{a,b}", "!", " ", "\t", "é", "日本", "%d", "${X:-y}"]
)  # fmt: skip
_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\x00"),
    max_size=12,
)
_VALUE = st.lists(st.one_of(_NASTY, _TEXT), min_size=1, max_size=6).map("".join)

DUMP = (
    'python3 -c "import json, os; json.dump({k: v for k, v in os.environ.items() '
    "if k.startswith('FUZZ_')}, open(os.environ['GPUJOBS_CKPT_DIR'] + '/env.json', 'w'))\""
)


@settings(
    max_examples=8,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(values=st.lists(_VALUE, min_size=1, max_size=4))
def test_env_values_arrive_literally(tmp_path: Path, values: list[str]) -> None:
    env = {f"FUZZ_{i}": value for i, value in enumerate(values)}
    folder = tmp_path / f"case-{abs(hash(tuple(values)))}"
    folder.mkdir()
    spec = folder / "spec.yaml"
    spec.write_text(yaml.safe_dump({"name": "fuzz-env", "command": DUMP, "env": env}))
    done = gpujobs_cli("launch", str(spec), "--runs-dir", str(folder / "runs"), cwd=folder)
    assert done.returncode == 0, done.stderr[-1500:]
    [env_json] = (folder / "runs").glob("*/env.json")
    assert json.loads(env_json.read_text()) == env
    assert not list(folder.rglob("PWNED")), "a value ran as a command"
