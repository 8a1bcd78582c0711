"""The fleet as a system service: fixed locations for a system install, a systemd unit systemd accepts, and
`hubfleet upgrade` — the database backed up and migrated (or put back as it was when a migration fails), then the
hubs restarted one at a time while users' servers run on."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import typer
from alembic import command
from alembic.script import ScriptDirectory

from hubfleet import db
from hubfleet.cli.output import fleet_file, state_root
from hubfleet.common import state as state_module
from hubfleet.common.state import SYSTEM_FLEET_FILE, SYSTEM_STATE_DIR, state_dir_for
from hubfleet.edu.exchange.store import CellGrade, Exchange
from hubfleet.fleet.service import systemd_unit
from hubfleet.health.client import HubUser, PasswordLogin
from hubfleet.system import pidfiles
from tests.helpers import RunningFleet, hubfleet, processes_of_hub_users, running_fleet, unique_hub
from tests.requirements import need

# --------------------------------------------------------------------------------------------- locations


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A current directory with no fleet in it, and no state directory named in the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("HUBFLEET_STATE_DIR", raising=False)
    return tmp_path


def test_a_system_install_keeps_its_state_in_one_place(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "system_install", lambda: True)
    assert state_dir_for() == SYSTEM_STATE_DIR == Path("/var/lib/hubfleet")
    monkeypatch.setenv("HUBFLEET_STATE_DIR", str(elsewhere / "mine"))
    assert state_dir_for() == elsewhere / "mine"  # the environment still wins
    assert state_root(elsewhere / "given") == elsewhere / "given"  # and --state-dir over it
    monkeypatch.delenv("HUBFLEET_STATE_DIR")
    (elsewhere / ".hubfleet").mkdir()  # a fleet started from here before keeps its state here
    assert state_dir_for() == elsewhere / ".hubfleet"


def test_without_root_the_state_follows_the_current_directory(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(state_module, "system_install", lambda: False)
    assert state_dir_for() == elsewhere / ".hubfleet"


def test_the_fleet_file_of_a_system_install(elsewhere: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import hubfleet.cli.output as output

    monkeypatch.setattr(output, "system_install", lambda: True)
    assert fleet_file(elsewhere / "given.yaml") == elsewhere / "given.yaml"
    if SYSTEM_FLEET_FILE.is_file():
        assert fleet_file(None) == SYSTEM_FLEET_FILE
    else:
        with pytest.raises(typer.Exit):
            fleet_file(None)  # says: no fleet file given, and there is no /etc/hubfleet/fleet.yaml
    monkeypatch.setattr(output, "system_install", lambda: False)
    with pytest.raises(typer.Exit):
        fleet_file(None)


def test_commands_without_a_fleet_file_say_what_to_do(elsewhere: Path) -> None:
    result = hubfleet("validate", check=False, cwd=elsewhere)
    assert result.returncode == 1
    if os.geteuid() == 0 and not SYSTEM_FLEET_FILE.exists():
        assert f"there is no {SYSTEM_FLEET_FILE}" in result.stderr
    elif os.geteuid() != 0:
        assert "give the fleet file" in result.stderr


# --------------------------------------------------------------------------------------------- the unit

DEMO = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def test_install_service_writes_a_unit_that_systemd_accepts(tmp_path: Path) -> None:
    need("systemd-analyze")
    unit = tmp_path / "hubfleet.service"
    result = hubfleet("install-service", str(DEMO), "--state-dir", str(tmp_path / "state"), "--output", str(unit))
    assert "systemctl enable --now hubfleet" in result.stdout
    text = unit.read_text()
    assert f"ExecStart={sys.executable} -m hubfleet up {DEMO} --state-dir {tmp_path / 'state'} --no-live\n" in text
    for line in ("Restart=on-failure", "KillMode=mixed", "WantedBy=multi-user.target", "Type=simple"):
        assert f"\n{line}\n" in text
    assert f"\nEnvironment=PATH={os.environ['PATH']}\n" in text  # node for the proxies, as the installer had it
    verify = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False)
    assert verify.returncode == 0, verify.stderr


def test_the_unit_quotes_what_systemd_would_split() -> None:
    text = systemd_unit(
        Path("/etc/hub fleet/fleet.yaml"), Path("/var/lib/hubfleet"), environment={"PATH": "/a b:/usr/bin"}
    )
    assert ' up "/etc/hub fleet/fleet.yaml" --state-dir /var/lib/hubfleet' in text
    assert '\nEnvironment="PATH=/a b:/usr/bin"\n' in text


# --------------------------------------------------------------------------------------------- upgrade

H = unique_hub("sv")
PASSWORD = "upgrade-test-pw"
HUBS = f"{H}:\n  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, bob]}}\n"
PREVIOUS = "exchange_0002"
"""The exchange's schema before the course pages: the database of a previous release."""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with running_fleet(tmp_path_factory.mktemp("upgrade"), HUBS, [H], PASSWORD) as running:
        yield running


def _url(fleet: RunningFleet) -> str:
    return db.default_url(fleet.state_dir)


def _grade(fleet: RunningFleet) -> int:
    """A graded submission of bob's in the fleet database (as the exchange records one)."""
    exchange = Exchange(db.open_database(_url(fleet)), H)
    common = {"grading_spec": {}, "max_score": 3.0, "due": None, "late_policy": {}, "by": "alice", "max_bytes": 10**6}
    exchange.release("c1", "a1", {"a1.ipynb": b"{}"}, **common)
    submission = exchange.submit("c1", "a1", "bob", {"a1.ipynb": b'{"answer": 42}'}, max_bytes=10**6)
    exchange.collect("c1", "a1")
    exchange.record_grading(submission.id, [CellGrade("a1", "q1", 3.0, 2.5, "passed", "")])
    return submission.id


def _gradebook(fleet: RunningFleet) -> list[tuple[str, float]]:
    rows = Exchange(db.open_database(_url(fleet)), H).gradebook("c1", "a1")
    return [(row.student, row.total) for row in rows]


def _to_previous_release(fleet: RunningFleet) -> None:
    engine = db.connect(_url(fleet))
    command.downgrade(db.alembic_config(engine), PREVIOUS)
    engine.dispose()


def _revisions(fleet: RunningFleet) -> set[str]:
    with sqlite3.connect(fleet.state_dir / db.DATABASE_FILE) as connection:
        return {row[0] for row in connection.execute("SELECT version_num FROM alembic_version")}


def _server_of(fleet: RunningFleet, user: str) -> dict:
    token = {"Authorization": f"token {fleet.service_token(H)}"}
    return httpx.get(f"{fleet.hub_url(H)}hub/api/users/{user}", headers=token, timeout=30).json()


def _start_server(fleet: RunningFleet, user: str) -> None:
    async def scenario() -> None:
        async with httpx.AsyncClient(timeout=120) as client:
            login = await HubUser.login(client, fleet.hub_url(H), PasswordLogin(user, PASSWORD))
            await login.start_server()

    asyncio.run(scenario())


def _hub_process(fleet: RunningFleet) -> pidfiles.ProcessRecord | None:
    return pidfiles.running(fleet.state_dir / "hubs" / H / "hub.pid")


def test_a_failed_migration_is_refused_and_rolled_back(fleet: RunningFleet) -> None:
    graded = _grade(fleet)
    _start_server(fleet, "alice")
    _to_previous_release(fleet)
    assert PREVIOUS in _revisions(fleet)
    # A table the next migration creates is already there: the migration fails half-way.
    with sqlite3.connect(fleet.state_dir / db.DATABASE_FILE) as connection:
        connection.execute("CREATE TABLE exchange_fetches (id INTEGER PRIMARY KEY, note TEXT)")
        connection.execute("INSERT INTO exchange_fetches (note) VALUES ('in the way')")
    before = _revisions(fleet)
    hub = _hub_process(fleet)

    result = fleet.cli("upgrade", check=False)
    assert result.returncode == 1
    assert "upgrade refused: a migration failed" in " ".join(result.stderr.split())
    assert "no hub was restarted" in result.stderr
    assert _revisions(fleet) == before
    with sqlite3.connect(fleet.state_dir / db.DATABASE_FILE) as connection:
        assert connection.execute("SELECT note FROM exchange_fetches").fetchall() == [("in the way",)]
    assert _hub_process(fleet) == hub  # not restarted
    assert [graded] == [row["submission_id"] for row in _rows(fleet)]
    with sqlite3.connect(fleet.state_dir / db.DATABASE_FILE) as connection:
        connection.execute("DROP TABLE exchange_fetches")


def _rows(fleet: RunningFleet) -> list[dict]:
    with sqlite3.connect(fleet.state_dir / db.DATABASE_FILE) as connection:
        connection.row_factory = sqlite3.Row
        return [dict(row) for row in connection.execute("SELECT submission_id, auto_score FROM exchange_grades")]


def test_upgrade_keeps_users_grades_and_running_servers(fleet: RunningFleet) -> None:
    assert PREVIOUS in _revisions(fleet)  # the previous release's database (left by the test above)
    server = _server_of(fleet, "alice")["servers"][""]
    assert server["ready"]
    server_processes = set(processes_of_hub_users(H))
    assert server_processes
    hub = _hub_process(fleet)
    assert hub is not None

    result = fleet.cli("upgrade")
    out = " ".join(result.stdout.split())
    assert "fleet database backed up to" in out and "fleet database migrated" in out
    assert f"hub {H}: restarted, servers kept" in out
    backups = list((fleet.state_dir / "backups").glob("fleet-before-upgrade-*.sqlite"))
    assert len(backups) == 2  # the refused upgrade's and this one's
    engine = db.connect(_url(fleet))
    assert _revisions(fleet) == set(ScriptDirectory.from_config(db.alembic_config(engine)).get_heads())
    engine.dispose()
    # The hub is a new process; users, grades and alice's server are all still there.
    restarted = _hub_process(fleet)
    assert restarted is not None and restarted != hub
    assert fleet.status()["hubs"][0]["healthy"]
    assert _gradebook(fleet) == [("bob", 2.5)]
    alice = _server_of(fleet, "alice")
    assert alice["servers"][""]["ready"] and alice["servers"][""]["started"] == server["started"]
    assert server_processes <= set(processes_of_hub_users(H))
    assert {user["name"] for user in _users(fleet)} >= {"alice"}
    reply = httpx.get(f"{fleet.url}{alice['servers']['']['url']}api/status", timeout=30, follow_redirects=False)
    assert reply.status_code in (200, 302, 403)  # the server answers through the front door (its route is there)


def _users(fleet: RunningFleet) -> list[dict]:
    token = {"Authorization": f"token {fleet.service_token(H)}"}
    return httpx.get(f"{fleet.hub_url(H)}hub/api/users", headers=token, timeout=30).json()
