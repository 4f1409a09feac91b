"""Telling the user what happened while they were away: finished, failed, preempted, 80 % of
the budget used, and (from the node itself) stopped at the budget. A sink (NotifyingSink) wraps
the driver's EventSink and turns its transitions into notifications, so the state machine itself
sends nothing.

Targets (the spec's `notify:`, else `notify:` in <GPUJOBS_HOME>/config.yaml):
- `desktop`: notify-send, where there is one;
- a webhook URL: a JSON POST ({"event", "job", "name", "state", "message", "title"});
- ntfy: `https://ntfy.sh/<topic>` or `ntfy:https://<server>/<topic>`: the message as the body;
- anything else with `://`: apprise (`pip install apprise`), which covers mail, Slack, Discord,
  Telegram and many more.
A webhook URL holds its secret in its path: only its scheme and host are ever shown.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from gpujobs.errors import SpecError
from gpujobs.lifecycle.cap_watch import CAP_WARNING_MARK
from gpujobs.lifecycle.events import EventSink, PassingSink
from gpujobs.paths import HomeLayout
from gpujobs.spec import REDACTED, JobSpec
from gpujobs.state import JobState

_TIMEOUT_S = 10.0
# In the note an interactive session's idle stop makes: what this sink recognises it by.
IDLE_STOP_MARK = "idle stop"


class Event(StrEnum):
    FINISHED = "finished"
    FAILED = "failed"
    PREEMPTED = "preempted"
    BUDGET_80 = "budget_80"
    BUDGET_STOP = "budget_stop"  # sent by the node itself (runtime/notify_node.sh)
    IDLE_STOP = "idle_stop"  # an interactive session (`gpujobs dev`) stopped for idleness


_HEADLINES = {
    Event.FINISHED: "finished",
    Event.FAILED: "failed",
    Event.PREEMPTED: "lost its node (preempted); resuming elsewhere",
    Event.BUDGET_80: "has used 80 % of its budget",
    Event.BUDGET_STOP: "was stopped on the node at its budget",
    Event.IDLE_STOP: "was idle and is being stopped; its notebooks come home",
}


@dataclass(frozen=True)
class Notification:
    event: Event
    job_id: str
    job_name: str
    state: str
    message: str

    @property
    def title(self) -> str:
        return f"gpujobs: {self.job_name} {_HEADLINES[self.event]}"

    def payload(self) -> dict[str, str]:
        return {
            "event": self.event.value,
            "job": self.job_id,
            "name": self.job_name,
            "state": self.state,
            "title": self.title,
            "message": self.message,
        }


class Channel(Protocol):
    label: str  # safe to show: no secret

    def send(self, notification: Notification) -> None: ...


def shown(target: str) -> str:
    """A target as it may be logged: `https://hooks.slack.com/...` keeps scheme and host."""
    scheme, sep, rest = target.partition("://")
    if not sep:
        return target
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/..."


@dataclass(frozen=True)
class Webhook:
    url: str

    @property
    def label(self) -> str:
        return f"webhook {shown(self.url)}"

    def send(self, notification: Notification) -> None:
        import httpx

        httpx.post(self.url, json=notification.payload(), timeout=_TIMEOUT_S).raise_for_status()


@dataclass(frozen=True)
class Ntfy:
    url: str  # https://server/topic

    @property
    def label(self) -> str:
        return f"ntfy {shown(self.url)}"

    def send(self, notification: Notification) -> None:
        import httpx

        headers = {"Title": notification.title, "Tags": notification.event.value}
        response = httpx.post(
            self.url,
            content=notification.message.encode(),
            headers=headers,
            timeout=_TIMEOUT_S,
        )
        response.raise_for_status()


@dataclass(frozen=True)
class Desktop:
    label: str = "desktop"

    def send(self, notification: Notification) -> None:
        binary = shutil.which("notify-send")
        if binary is None:
            return  # a headless machine: nothing to show it on
        subprocess.run(
            [binary, "--app-name=gpujobs", notification.title, notification.message],
            check=True,
            capture_output=True,
            timeout=_TIMEOUT_S,
        )


@dataclass(frozen=True)
class AppriseTarget:
    url: str

    @property
    def label(self) -> str:
        return f"apprise {shown(self.url)}"

    def send(self, notification: Notification) -> None:
        try:
            import apprise
        except ImportError:
            raise RuntimeError("needs apprise: pip install apprise") from None
        sender = apprise.Apprise()
        if not sender.add(self.url):
            raise RuntimeError("apprise does not know this kind of URL")
        if not sender.notify(title=notification.title, body=notification.message):
            raise RuntimeError("apprise could not deliver it")


def channel_for(target: str) -> Channel:
    if target == "desktop":
        return Desktop()
    if target.startswith("ntfy:"):
        return Ntfy(target.removeprefix("ntfy:"))
    if target.startswith("webhook:"):
        return Webhook(target.removeprefix("webhook:"))
    scheme, _, rest = target.partition("://")
    if scheme in ("http", "https"):
        host = rest.split("/", 1)[0].rsplit("@", 1)[-1].split(":")[0]
        return Ntfy(target) if host == "ntfy.sh" else Webhook(target)
    return AppriseTarget(target)


def node_targets(targets: Sequence[str]) -> str:
    """The lines of the node's targets file (`webhook URL` / `ntfy URL`): what the node can
    reach with curl alone when it stops the job on its own, the laptop gone."""
    lines = []
    for target in targets:
        channel = channel_for(target)
        if isinstance(channel, Webhook):
            lines.append(f"webhook {channel.url}\n")
        elif isinstance(channel, Ntfy):
            lines.append(f"ntfy {channel.url}\n")
    return "".join(lines)


def node_notify_lines(spec: JobSpec, home: HomeLayout) -> str:
    """The node's targets file for this job: its own targets, else the user's default."""
    targets = spec.notify
    if targets is None:
        try:
            targets = user_default_targets(home.config_file)
        except SpecError:
            targets = []  # the driver says why, once (api.live.live_sink)
    return node_targets([t for t in targets if not t.endswith(f"/{REDACTED}")])


def user_default_targets(config_file: Path) -> list[str]:
    """`notify:` in the user's config.yaml, when there is one."""
    if not config_file.is_file():
        return []
    import yaml

    try:
        data = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError as exc:
        raise SpecError(f"{config_file}: not valid YAML ({exc}); fix or remove it") from None
    targets = data.get("notify", []) if isinstance(data, dict) else None
    if not isinstance(targets, list) or not all(isinstance(t, str) for t in targets):
        raise SpecError(
            f"{config_file}: `notify` must be a list of targets, e.g. "
            "notify: [desktop, https://ntfy.sh/my-topic]"
        )
    return targets


class Notifier:
    """Sends one notification to every channel; a channel that fails is reported through
    `on_failure` (with its safe label) and never stops the job."""

    def __init__(
        self, channels: Sequence[Channel], on_failure: Callable[[str], None] | None = None
    ) -> None:
        self.channels = list(channels)
        self.on_failure = on_failure or (lambda _message: None)
        self.sent: list[Notification] = []

    @classmethod
    def for_targets(cls, targets: Sequence[str], **kwargs: object) -> Notifier:
        return cls([channel_for(target) for target in targets], **kwargs)  # type: ignore[arg-type]

    def send(self, notification: Notification) -> None:
        self.sent.append(notification)
        for channel in self.channels:
            try:
                channel.send(notification)
            except Exception as exc:
                reason = exc.__class__.__name__
                if not _may_hold_url(exc):
                    reason = f"{reason}: {exc}"
                self.on_failure(f"notification to {channel.label} failed ({reason})")


def _may_hold_url(exc: Exception) -> bool:
    # httpx puts the request URL, secret path and all, in its messages.
    return exc.__class__.__module__.startswith("httpx")


class NotifyingSink(PassingSink):
    """Passes everything to `inner`, and announces the transitions the user cares about."""

    def __init__(self, inner: EventSink, notifier: Notifier, job_id: str, job_name: str) -> None:
        super().__init__(inner)
        self.job_id = job_id
        self.notifier = notifier
        self.job_name = job_name
        self._last_state = ""

    def state(self, job_id: str, state: JobState, message: str) -> None:
        self.inner.state(job_id, state, message)
        self._last_state = state.value
        event = {
            JobState.SUCCEEDED: Event.FINISHED,
            JobState.FAILED: Event.FAILED,
            JobState.RECOVERING: Event.PREEMPTED,
        }.get(state)
        if event is not None:
            self.announce(job_id, event, message)

    def announce(self, job_id: str, event: Event, message: str) -> None:
        self.notifier.send(Notification(event, job_id, self.job_name, self._last_state, message))

    def note(self, message: str) -> None:
        self.inner.note(message)
        if CAP_WARNING_MARK in message:
            self.announce(self.job_id, Event.BUDGET_80, message)
        elif message.startswith(IDLE_STOP_MARK):
            self.announce(self.job_id, Event.IDLE_STOP, message)
