"""Whether a fleet fits the machine it is checked on — what `validate` and `up` warn about. The fleet file is valid
either way (it may be written for another machine); these are the surprises it would bring on this one."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from hubfleet.spec.models import Fleet

GIB = 1024**3
MEMINFO = Path("/proc/meminfo")
EPHEMERAL_PORTS = Path("/proc/sys/net/ipv4/ip_local_port_range")


@dataclass(frozen=True)
class Machine:
    """What this machine has."""

    memory_bytes: int | None
    cpus: int | None
    ephemeral_ports: tuple[int, int] | None
    """The kernel's range for the local ports of outgoing connections (and `bind(0)`)."""

    @classmethod
    def here(cls) -> Machine:
        return cls(_memory(), os.cpu_count(), _ephemeral_ports())


def _memory() -> int | None:
    try:
        for line in MEMINFO.read_text(encoding="ascii").splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _ephemeral_ports() -> tuple[int, int] | None:
    try:
        low, high = (int(part) for part in EPHEMERAL_PORTS.read_text(encoding="ascii").split())
    except (OSError, ValueError):
        return None
    return low, high


def machine_warnings(fleet: Fleet, machine: Machine | None = None) -> list[str]:
    """What of `fleet` does not fit this machine (in words, each with what to do)."""
    machine = machine or Machine.here()
    found = []
    for hub in fleet.hubs.values():
        if hub.backend != "local":
            continue  # its servers run on the cluster's nodes
        for profile in hub.profiles:
            where = f"hub {hub.name}, profile {profile.name}"
            if machine.memory_bytes and profile.memory > machine.memory_bytes:
                found.append(
                    f"{where}: memory {profile.memory / GIB:.1f} GiB is more than this machine has "
                    f"({machine.memory_bytes / GIB:.1f} GiB): the limit never holds, one server can take all memory"
                )
            if machine.cpus and profile.cpu > machine.cpus:
                found.append(
                    f"{where}: cpu {profile.cpu:g} is more cores than this machine has ({machine.cpus}): "
                    "the limit never holds"
                )
    ports = fleet.internal_ports
    if machine.ephemeral_ports is not None:
        low, high = machine.ephemeral_ports
        if ports.start <= high and ports.end >= low:
            found.append(
                f"internal_ports {ports.start}-{ports.end} overlap the kernel's ephemeral range {low}-{high} "
                "(/proc/sys/net/ipv4/ip_local_port_range), where outgoing connections take their ports: a hub "
                f"could find its port taken — choose ports below {low}"
            )
    return found
