"""The fleet's state directory: where the supervisor, the front door and every hub keep their files."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hubfleet import db
from hubfleet.common.events import EVENTS_FILE
from hubfleet.common.files import private_dir, write_private
from hubfleet.common.settings import FrontDoorPorts, HubPorts
from hubfleet.spec.models import Fleet

DEFAULT_STATE_DIR = ".hubfleet"
STATE_ENV = "HUBFLEET_STATE_DIR"

SYSTEM_STATE_DIR = Path("/var/lib/hubfleet")
"""Where a system install (hubfleet run as root) keeps its state: one place, whatever the current directory."""
SYSTEM_FLEET_FILE = Path("/etc/hubfleet/fleet.yaml")
"""A system install's fleet file, used when a command is given none."""


def system_install() -> bool:
    """Whether this is a system install: hubfleet runs as root (fixed state and fleet-file locations)."""
    return os.geteuid() == 0


def default_state_dir() -> Path:
    """Where the state is when nothing names it: ./.hubfleet if a fleet was started from here before, else
    /var/lib/hubfleet for a system install, else ./.hubfleet."""
    local = Path(DEFAULT_STATE_DIR)
    if local.is_dir() or not system_install():
        return local.resolve()
    return SYSTEM_STATE_DIR


def state_dir_for(fleet: Fleet | None = None, explicit: Path | None = None) -> Path:
    """The state directory: given explicitly, else `$HUBFLEET_STATE_DIR`, else the fleet's, else the default
    (`default_state_dir`)."""
    if explicit is not None:
        return explicit.resolve()
    if os.environ.get(STATE_ENV):
        return Path(os.environ[STATE_ENV]).resolve()
    if fleet is not None and fleet.state_dir is not None:
        return fleet.state_dir.resolve()
    return default_state_dir()


CGROUP_TOP = "hubfleet"
"""The cgroup every fleet's groups are below (in each hierarchy)."""


def fleet_cgroup(fleet_name: str, state_root: Path) -> str:
    """The fleet's cgroup, `hubfleet/<fleet name>-<short hash of its state directory>`: two fleets on one machine
    (two state directories) never share one, even with the same name or hubs of the same name."""
    digest = hashlib.sha256(str(state_root.resolve()).encode()).hexdigest()[:8]
    return f"{CGROUP_TOP}/{fleet_name}-{digest}"


def hub_cgroup(fleet_name: str, state_root: Path, hub: str) -> str:
    """Hub `hub`'s cgroup: its users' servers and Dask clusters each get one below it."""
    return f"{fleet_cgroup(fleet_name, state_root)}/{hub}"


def database_url(fleet: Fleet, state_root: Path) -> str:
    """The fleet database's URL: the fleet file's `usage.metering.database_url`, else SQLite in the state directory."""
    return fleet.usage.metering.database_url or db.default_url(state_root)


@dataclass(frozen=True)
class HubState:
    """One hub's folder in the state directory."""

    root: Path

    @property
    def name(self) -> str:
        return self.root.name

    def create(self) -> HubState:
        private_dir(self.root)
        private_dir(self.secrets_dir)
        return self

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def settings_file(self) -> Path:
        return self.root / "settings.json"

    @property
    def ports_file(self) -> Path:
        return self.root / "ports.json"

    def log(self, process: str) -> Path:
        return self.root / f"{process}.log"

    def secret(self, name: str, make: Callable[[], str] = lambda: secrets.token_hex(32)) -> Path:
        """The file holding secret `name`, created with `make()` (a random token) on first use."""
        path = self.secrets_dir / name
        if not path.exists():
            write_private(path, make())
        return path

    def store_secret(self, name: str, value: str) -> Path:
        """Keep `value` as secret `name` (rewritten only when it changed)."""
        path = self.secrets_dir / name
        if not path.exists() or path.read_text(encoding="utf-8") != value:
            write_private(path, value)
        return path

    def ports(self) -> HubPorts | None:
        """The ports this hub was given, if any."""
        if not self.ports_file.exists():
            return None
        return HubPorts.model_validate_json(self.ports_file.read_text(encoding="utf-8"))

    @property
    def prewarm_file(self) -> Path:
        """The servers the fleet pre-warmed for a course meeting and nobody has claimed yet (see `prewarmed`)."""
        return self.root / "prewarm.json"

    def prewarmed(self) -> dict[str, float]:
        """User → when the fleet started their server before a course meeting (Unix time)."""
        try:
            data = json.loads(self.prewarm_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return {str(user): float(started) for user, started in data.items()} if isinstance(data, dict) else {}

    def keep_prewarmed(self, records: dict[str, float]) -> None:
        write_private(self.prewarm_file, json.dumps(records))

    def keep_ports(self, ports: HubPorts) -> None:
        write_private(self.ports_file, ports.model_dump_json())


@dataclass(frozen=True)
class FleetState:
    """The whole state directory."""

    root: Path

    def create(self) -> FleetState:
        private_dir(self.root)
        private_dir(self.root / "hubs")
        private_dir(self.root / "frontdoor")
        return self

    @property
    def exists(self) -> bool:
        return (self.root / "hubs").is_dir()

    def hub(self, name: str) -> HubState:
        return HubState(self.root / "hubs" / name)

    def hub_names(self) -> list[str]:
        hubs = self.root / "hubs"
        return sorted(p.name for p in hubs.iterdir() if p.is_dir()) if hubs.is_dir() else []

    @property
    def control_socket(self) -> Path:
        return self.root / "supervisor.sock"

    @property
    def supervisor_pid_file(self) -> Path:
        return self.root / "supervisor.pid"

    @property
    def supervisor_log(self) -> Path:
        return self.root / "supervisor.log"

    @property
    def events_file(self) -> Path:
        """The fleet's event log (`hubfleet.common.events`)."""
        return self.root / EVENTS_FILE

    @property
    def frontdoor_dir(self) -> Path:
        return self.root / "frontdoor"

    @property
    def applied_file(self) -> Path:
        """The fleet file as last applied (text and original path), for `plan` and restarts."""
        return self.root / "applied.json"

    def record_applied(self, source: Path, text: str) -> None:
        write_private(self.applied_file, json.dumps({"path": str(source), "text": text}))

    def applied(self) -> tuple[Path, str] | None:
        if not self.applied_file.exists():
            return None
        data = json.loads(self.applied_file.read_text(encoding="utf-8"))
        return Path(data["path"]), data["text"]

    @property
    def frontdoor_ports_file(self) -> Path:
        return self.frontdoor_dir / "ports.json"

    def frontdoor_ports(self) -> FrontDoorPorts | None:
        """The front door's internal ports, if it was given some."""
        try:
            return FrontDoorPorts.model_validate_json(self.frontdoor_ports_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def keep_frontdoor_ports(self, ports: FrontDoorPorts) -> None:
        write_private(self.frontdoor_ports_file, ports.model_dump_json())

    def all_ports(self) -> set[int]:
        """Every port given to the front door or some hub of this state directory."""
        door = self.frontdoor_ports()
        taken: set[int] = set(door.model_dump().values()) if door else set()
        for name in self.hub_names():
            ports = self.hub(name).ports()
            if ports:
                taken.update(port for port in ports.model_dump().values() if port is not None)
        return taken


PREWARM_CLAIM_MARGIN = 30.0
"""A pre-warmed server counts as its student's once the student was active more than this long after its start
(before, only the server's own start-up reports activity)."""


def claimed(started: float, last_activity: float | None) -> bool:
    """Whether the student of a server pre-warmed at `started` has come to it (their last activity, Unix time)."""
    return last_activity is not None and last_activity > started + PREWARM_CLAIM_MARGIN
