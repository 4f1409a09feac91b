"""From a Node to the Transport that reaches it. paramiko is imported only for SSH nodes, so a
local job never pays for it."""

from __future__ import annotations

from gpujobs.errors import ProvisioningError
from gpujobs.models import Node
from gpujobs.paths import HomeLayout
from gpujobs.remote.transport import LocalTransport, Transport


def connect_node(
    node: Node, home: HomeLayout, *, reconnect_window_s: float | None = None
) -> Transport:
    if node.transport == "local":
        return LocalTransport()
    if node.transport == "ssh":
        from gpujobs.remote.ssh import HostKeyPins, SshSettings, SshTarget, SSHTransport

        identity = node.identity_file
        if identity is None and node.uses_job_key:
            identity = str(home.job_key_dir(node.job_id) / "id_ed25519")
        # A node with a per-job key is a cloud machine whose sshd may still be booting: only
        # there is a host that never answered worth retrying.
        settings = SshSettings(retry_first_contact=node.uses_job_key)
        if reconnect_window_s is not None:
            settings = SshSettings(
                reconnect_window_s=reconnect_window_s, retry_first_contact=node.uses_job_key
            )
        return SSHTransport(
            SshTarget(node.host, node.port, node.user or "", identity),
            HostKeyPins(home.known_hosts),
            settings,
        )
    raise ProvisioningError(f"node {node.node_id}: no transport for {node.transport!r}")
