"""The fleet as a system service: `hubfleet install-service` (a systemd unit) and `hubfleet upgrade` (the database
migrated safely, then hubs restarted one at a time with users' servers kept)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hubfleet.cli.fleet import FILE_ARGUMENT, applied_fleet, load_or_exit
from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail, fleet_file, state_root
from hubfleet.common.state import FleetState, database_url
from hubfleet.fleet import upgrade as upgrading
from hubfleet.fleet.control import ControlClient, NotRunning
from hubfleet.fleet.service import UNIT_PATH, next_steps, systemd_unit

OUTPUT_OPTION: Any = typer.Option(None, "--output", "-o", help=f"where to write the unit (default: {UNIT_PATH})")


def install_service(
    file: Path | None = FILE_ARGUMENT,
    state_dir: Path | None = STATE_DIR_OPTION,
    output: Path | None = OUTPUT_OPTION,
) -> None:
    """Write a systemd unit that runs the fleet as a service (`hubfleet up` in the foreground, restarted on failure
    and started at boot)."""
    source = fleet_file(file).resolve()
    fleet = load_or_exit(source)
    state = state_root(state_dir, fleet)
    target = output or UNIT_PATH
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(systemd_unit(source, state), encoding="utf-8")
    except OSError as exc:
        raise fail(f"cannot write {target}: {exc.strerror or exc} (as root, or give --output)") from None
    console.print(f"[green]✓[/] wrote {escape(str(target))}: fleet {fleet.name} from {escape(str(source))}")
    console.print(f"  state directory {escape(str(state))}")
    console.print("Start it now and at every boot with:")
    for command in next_steps(target):
        console.print(f"  {escape(command)}")


def upgrade(state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """After installing a new hubfleet: back up and migrate the fleet database (rolled back if a migration fails),
    then restart the running fleet's hubs one at a time; users' servers keep running."""
    state = FleetState(state_root(state_dir))
    fleet = applied_fleet(state)
    if fleet is None:
        raise fail(f"no fleet has run from {state.root}: nothing to upgrade (give --state-dir?)")
    try:
        with console.status("Backing up and migrating the fleet database…"):
            migration = upgrading.migrate(database_url(fleet, state.root), state.root)
    except upgrading.UpgradeRefused as exc:
        raise fail(f"upgrade refused: {exc}; no hub was restarted") from None
    if migration.backup is not None:
        console.print(f"[green]✓[/] fleet database backed up to {escape(str(migration.backup))}")
    if migration.changed:
        before = ", ".join(sorted(migration.before)) or "empty"
        console.print(f"[green]✓[/] fleet database migrated: {before} → {', '.join(sorted(migration.after))}")
    else:
        console.print("[green]✓[/] fleet database already at the installed version")
    client = ControlClient(state)
    try:
        names = [hub.name for hub in client.status().hubs]
    except NotRunning:
        console.print("No fleet is running: the next `hubfleet up` starts everything from the installed version.")
        return
    with console.status("Starting a new fork server (hubs start from it)…"):
        if not client.renew_forkserver():
            errors.print("[yellow]the new fork server is not ready: hubs restart the plain way (slower)[/]")
    failed = []
    for index, name in enumerate(names, 1):
        with console.status(f"Restarting hub {name} ({index}/{len(names)}); its users' servers keep running…"):
            try:
                restarted = client.restart(name)
            except RuntimeError as exc:
                errors.print(f"[red]✗[/] hub [bold]{name}[/]: {escape(str(exc))}")
                failed.append(name)
                continue
        what = "restarted, servers kept" if restarted else "asleep: starts from the installed version when it wakes"
        console.print(f"[green]✓[/] hub [bold]{name}[/]: {what}")
    if failed:
        raise fail(f"hub(s) {', '.join(failed)} did not restart: see their hub.log; `hubfleet status` shows them")
    console.print(
        "Upgraded. The supervisor and front door keep running the code they started with until the service "
        "restarts (which stops users' servers): do that at a quiet time."
    )


def register(app: typer.Typer) -> None:
    """Add the service commands to `app`."""
    app.command("install-service")(install_service)
    app.command()(upgrade)
