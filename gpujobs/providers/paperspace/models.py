"""Pydantic models of the Paperspace API's responses (https://api.paperspace.com/v1).

Field names follow the API's OpenAPI document (camelCase on the wire, snake_case here). Only the
fields gpujobs reads are declared; the rest are ignored, so a new field on Paperspace's side does
not break a launch. Fields the API marks required but gpujobs can live without have defaults, so
an answer that lacks one still parses.
"""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

T = TypeVar("T")

# Machine states, from the API's enum. "off" is also where a machine ends after a shutdown from
# inside (the budget timer) or Paperspace's auto-shutdown: it still bills its disk until deleted.
READY = "ready"
OFF = "off"


class _Api(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class Machine(_Api):
    id: str
    name: str
    state: str
    machine_type: str = ""
    region: str = ""
    public_ip: str | None = None
    public_ip_type: str | None = None
    private_ip: str | None = None
    auto_shutdown_enabled: bool | None = None
    auto_shutdown_timeout: float | None = None
    dt_created: str | None = None
    dt_deleted: str | None = None

    @property
    def deleted(self) -> bool:
        return self.dt_deleted is not None


class MachineEvent(_Api):
    """The asynchronous task a mutation started (create, deactivate, ...)."""

    id: str
    name: str = ""
    state: str = ""  # new, in progress, done, error, cancelled
    machine_id: str | None = None
    error: str | None = None


class MachineMutation(_Api):
    """What POST /machines and DELETE /machines/{id} answer: the machine and its event."""

    event: MachineEvent | None = None
    data: Machine


class StartupScript(_Api):
    id: str
    name: str
    description: str | None = None
    is_enabled: bool = True
    is_run_once: bool = False
    assigned_machine_ids: list[str] = Field(default_factory=list)
    dt_created: str | None = None
    dt_deleted: str | None = None


class PrivateNetwork(_Api):
    """A team's private network in one region: a /24 its machines share. A multi-node job gets
    one of its own, so its machines reach each other and nothing else shares the network."""

    id: str
    name: str
    region: str = ""
    network: str = ""  # the subnet's prefix, e.g. 10.3.7.0
    netmask: str = ""
    dt_created: str | None = None
    dt_deleted: str | None = None


class TemplateMachineType(_Api):
    machine_type_label: str
    is_available: bool = True


class OsTemplate(_Api):
    id: str
    name: str
    agent_type: str = ""
    operating_system_label: str = ""
    default_size_gb: float | None = None
    available_machine_types: list[TemplateMachineType] = Field(default_factory=list)

    def runs_on(self, machine_type: str) -> bool:
        """Whether the template may be used with `machine_type` (an empty list: not said)."""
        if not self.available_machine_types:
            return True
        return any(
            entry.machine_type_label == machine_type and entry.is_available
            for entry in self.available_machine_types
        )


class MachineAvailability(_Api):
    available: bool


class Page(_Api, Generic[T]):
    """One page of a list endpoint: follow `next_page` as `?after=` while `has_more`."""

    items: list[T]
    has_more: bool = False
    next_page: str | None = None


class ApiError(_Api):
    """The API's error body: {"code", "message", "details"}."""

    code: str = ""
    message: str = ""


class MachineCreate(_Api):
    """The body of POST /machines (the fields gpujobs sets)."""

    name: str
    machine_type: str
    template_id: str
    region: str
    disk_size: int
    public_ip_type: str = "dynamic"  # static IPs bill on their own and outlive the machine
    startup_script_id: str | None = None
    network_id: str | None = None  # a private network of the job's own (multi-node jobs)
    auto_shutdown_enabled: bool = False
    auto_shutdown_timeout: int | None = None  # hours
    auto_shutdown_force: bool | None = None
    start_on_create: bool = True
    email_password: bool = False  # no password e-mail per machine: login is by key only

    def wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, exclude_none=True)


class PrivateNetworkCreate(_Api):
    """The body of POST /private-networks."""

    name: str
    region: str

    def wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, exclude_none=True)


class StartupScriptCreate(_Api):
    """The body of POST /startup-scripts."""

    name: str
    script: str
    is_run_once: bool = True

    def wire(self) -> dict[str, object]:
        return self.model_dump(by_alias=True, exclude_none=True)
