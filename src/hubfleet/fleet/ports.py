"""Loopback ports for the processes of a fleet's hubs, chosen from the fleet file's `internal_ports`."""

from __future__ import annotations

import socket

from hubfleet.common.settings import HubPorts
from hubfleet.common.state import FleetState, HubState
from hubfleet.spec.models import PortRange


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a TCP port can be bound on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def allocate_ports(count: int, port_range: PortRange, taken: set[int]) -> list[int]:
    """`count` free loopback ports from `port_range`, avoiding `taken`."""
    found: list[int] = []
    for port in range(port_range.start, port_range.end + 1):
        if port not in taken and port_is_free(port):
            found.append(port)
            if len(found) == count:
                return found
    raise RuntimeError(f"no {count} free ports left in {port_range.start}-{port_range.end}")


def hub_ports(state: FleetState, hub: HubState, port_range: PortRange, *, gateway: bool = False) -> HubPorts:
    """The hub's ports: the ones it had before (so running servers keep reaching it), plus any now needed."""
    ports = hub.ports()
    if ports is None:
        (hub_port,) = allocate_ports(1, port_range, state.all_ports())
        ports = HubPorts(hub=hub_port)
        hub.keep_ports(ports)
    if gateway and ports.gateway is None:
        http, tcp, api = allocate_ports(3, port_range, state.all_ports())
        ports = ports.model_copy(update={"gateway": http, "gateway_tcp": tcp, "gateway_api": api})
        hub.keep_ports(ports)
    return ports
