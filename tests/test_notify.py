"""Notifications reach a real HTTP receiver on loopback for each event kind: from the driver
(finished, failed, budget 80 %, preempted) and from the node itself (the budget stop), as a
webhook, ntfy and apprise would deliver them; desktop through notify-send. No webhook secret
appears in logs, the state store or the output."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpujobs.lifecycle.events import NullSink
from gpujobs.lifecycle.notify import (
    Event,
    Notification,
    Notifier,
    NotifyingSink,
    channel_for,
    node_targets,
)
from gpujobs.runtime.launcher import launch_script, node_notify_script
from gpujobs.runtime.node_layout import NodeLayout
from gpujobs.state import JobState
from tests.conftest import gpujobs_cli, write_spec, write_stubs

SECRET = "T0KEN-s3cret"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


@dataclass
class Receiver:
    url: str
    requests: list[Received] = field(default_factory=list)

    def events(self) -> list[str]:
        return [r.json()["event"] for r in self.requests if r.path.startswith("/hook")]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    received = Receiver("")

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            received.requests.append(Received(self.path, dict(self.headers), body))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    received.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield received
    finally:
        server.shutdown()
        server.server_close()


def _assert_no_secret(tmp_path: Path, *texts: str) -> None:
    for text in texts:
        assert SECRET not in text
    home = tmp_path / "home"
    for path in [*home.joinpath("logs").iterdir(), home / "state.db"]:
        assert SECRET.encode() not in path.read_bytes(), path


def test_a_finished_and_a_failed_job_reach_the_webhook(receiver: Receiver, tmp_path: Path) -> None:
    hook = f"{receiver.url}/hook/{SECRET}"
    for name, command in (("works", "true"), ("breaks", "exit 3")):
        spec = write_spec(
            tmp_path, f"name: {name}\ncommand: '{command}'\nnotify: ['{hook}']\n", f"{name}.yaml"
        )
        done = gpujobs_cli("launch", str(spec))
        assert done.returncode == (0 if name == "works" else 1), done.stderr
        _assert_no_secret(tmp_path, done.stdout, done.stderr)
    assert receiver.events() == ["finished", "failed"]
    finished, failed = (r.json() for r in receiver.requests)
    assert finished["name"] == "works" and finished["state"] == "SUCCEEDED"
    assert failed["name"] == "breaks" and "exit" in failed["message"]
    status = gpujobs_cli("status", "--json").stdout
    assert SECRET not in status


def test_the_budget_warning_and_the_node_stop_reach_the_webhook(
    receiver: Receiver, tmp_path: Path
) -> None:
    # 0.002 h is 7.2 s: the driver warns at 80 %, the node's own timer stops the job and posts.
    spec = write_spec(
        tmp_path,
        f"""
        name: capped
        command: 'sleep 60'
        budget: {{max_hours: 0.002}}
        notify: ['{receiver.url}/hook/{SECRET}']
        """,
    )
    done = gpujobs_cli("launch", str(spec), timeout=120)
    assert done.returncode != 0
    events = receiver.events()
    assert "budget_80" in events and events[-1] == "failed", events
    _assert_no_secret(tmp_path, done.stdout, done.stderr)


def test_the_node_posts_its_budget_stop_itself(receiver: Receiver, tmp_path: Path) -> None:
    """The launch script's watchdog, run as on a node whose driver is gone: curl posts to the
    webhook and to ntfy."""
    layout = NodeLayout(str(tmp_path / "job"))
    Path(layout.workdir).mkdir()
    Path(layout.env_file).write_text("export GPUJOBS_JOB_ID=capped-1234\n")
    Path(layout.notify_targets).write_text(
        node_targets([f"{receiver.url}/hook/{SECRET}", f"ntfy:{receiver.url}/my-topic", "desktop"])
    )
    Path(layout.notify_script).write_text(node_notify_script())
    Path(layout.launch_script).write_text(launch_script(["sleep", "30"], layout, max_seconds=1))
    # In a session of its own, as the transport starts it: the watchdog TERMs its group.
    subprocess.run(["sh", layout.launch_script], timeout=60, check=True, start_new_session=True)
    assert Path(layout.stop_reason).read_text().strip() == "max_hours"
    by_path = {r.path: r for r in receiver.requests}
    hook = by_path[f"/hook/{SECRET}"].json()
    assert hook["event"] == "budget_stop" and hook["job"] == "capped-1234"
    assert hook["source"] == "node"
    ntfy = by_path["/my-topic"]
    assert b"budget.max_hours reached" in ntfy.body
    assert ntfy.headers["Title"] == "gpujobs: capped-1234 stopped on the node"


def test_preempted_reaches_the_webhook_ntfy_apprise_and_the_desktop(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stubs = write_stubs(
        tmp_path / "bin", {"notify-send": f'printf "%s\\n" "$@" > {tmp_path}/shown'}
    )
    monkeypatch.setenv("PATH", f"{stubs}:/usr/bin:/bin")
    targets = [
        f"{receiver.url}/hook/{SECRET}",
        f"ntfy:{receiver.url}/topic",
        f"json://127.0.0.1:{receiver.url.rsplit(':', 1)[1]}/apprise",  # apprise's JSON service
        "desktop",
    ]
    failures: list[str] = []
    notifier = Notifier.for_targets(targets, on_failure=failures.append)
    sink = NotifyingSink(NullSink(), notifier, "gan-1", "gan")
    sink.state("gan-1", JobState.RUNNING, "started")
    sink.state("gan-1", JobState.RECOVERING, "spot instance reclaimed")
    assert failures == []
    paths = [r.path for r in receiver.requests]
    assert paths == [f"/hook/{SECRET}", "/topic", "/apprise"]
    assert receiver.requests[0].json()["event"] == "preempted"
    assert receiver.requests[1].headers["Tags"] == "preempted"
    assert b"spot instance reclaimed" in receiver.requests[2].body
    shown = (tmp_path / "shown").read_text()
    assert "gpujobs: gan lost its node (preempted)" in shown


def test_a_failing_target_is_a_note_without_its_secret() -> None:
    notes: list[str] = []
    notifier = Notifier.for_targets([f"http://127.0.0.1:9/hook/{SECRET}"], on_failure=notes.append)
    notifier.send(Notification(Event.FINISHED, "j-1", "j", "SUCCEEDED", "done"))
    [note] = notes
    assert "webhook http://127.0.0.1:9/..." in note and SECRET not in note


def test_targets_are_told_apart() -> None:
    assert channel_for("https://ntfy.sh/my-topic").label == "ntfy https://ntfy.sh/..."
    assert channel_for("https://hooks.slack.com/services/x").label.startswith("webhook")
    assert channel_for("mailto://me:pw@example.org").label == "apprise mailto://example.org/..."


def test_a_bad_target_in_the_spec_is_one_line(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "name: x\ncommand: 'true'\nnotify: [slack]\n")
    done = gpujobs_cli("launch", str(spec))
    assert done.returncode == 2
    assert "notify" in done.stderr and "not a notification target" in done.stderr
    assert "Traceback" not in done.stderr


def test_the_users_config_gives_the_default(receiver: Receiver, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.yaml").write_text(f"notify: ['{receiver.url}/hook/default']\n")
    spec = write_spec(tmp_path, "name: plain\ncommand: 'true'\n")
    assert gpujobs_cli("launch", str(spec)).returncode == 0
    assert receiver.events() == ["finished"]


def test_the_idle_stop_of_a_dev_session_reaches_the_webhook(receiver: Receiver) -> None:
    notifier = Notifier.for_targets([f"{receiver.url}/hook/{SECRET}"])
    sink = NotifyingSink(NullSink(), notifier, "nb-1", "nb")
    sink.note("JupyterLab: http://127.0.0.1:8888/lab?token=x")
    sink.note("idle stop: idle for 30.0 min (dev.idle_minutes 30); the notebooks come home")
    assert receiver.events() == ["idle_stop"]
    assert receiver.requests[0].json()["title"].startswith("gpujobs: nb was idle")


def test_the_node_script_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "notify.sh"
    path.write_text(node_notify_script())
    done = subprocess.run(
        ["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout
