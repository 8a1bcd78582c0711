"""Nothing lost: `hubfleet backup|restore` (the whole fleet) and `hubfleet hub archive|decommission|restore`."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from ruamel.yaml import YAML

from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail, state_root
from hubfleet.common.state import FleetState
from hubfleet.fleet.backup import (
    SnapshotError,
    archive_hub,
    backup_fleet,
    decommission_hub,
    fresh_archive,
    restore_fleet,
    restore_hub,
    running_processes,
)
from hubfleet.fleet.control import ControlClient, NotRunning, supervisor_pid
from hubfleet.spec import Fleet, SpecError, parse
from hubfleet.spec.units import human_size

BACKUP_TO: Any = typer.Option(None, "--to", help="backup folder (default: <state dir>-backups beside it)")
KEEP: Any = typer.Option(7, "--keep", min=1, help="snapshots to keep (unchanged files are shared)")
SOURCE: Any = typer.Argument(..., help="a backup folder (its newest snapshot) or one snapshot folder")
NEW_STATE_DIR: Any = typer.Option(None, "--state-dir", help="a new state directory to restore into")
HUB: Any = typer.Argument(..., help="the hub")
ARCHIVE_TO: Any = typer.Option(None, "--to", help="folder for the archive (default: <state dir>-archives)")
FORCE: Any = typer.Option(False, "--force", help="even without a fresh archive (everything is lost)")
ARCHIVE_FILE: Any = typer.Argument(..., help="a hub archive (.tar.gz)", exists=True, dir_okay=False)

T = TypeVar("T")

hub_app = typer.Typer(help="One hub's way out and back: archive, decommission, restore.", no_args_is_help=True)


class RichReporter:
    """Progress of long work as a rich bar (bytes, speed, time left); nothing when output is not a terminal."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task: TaskID | None = None

    def phase(self, description: str, total: int) -> None:
        if self.task is not None:
            self.progress.update(self.task, completed=self.progress.tasks[-1].total)
        self.task = self.progress.add_task(description, total=total or None)

    def advance(self, count: int) -> None:
        if self.task is not None:
            self.progress.advance(self.task, count)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:<18}"),
        BarColumn(bar_width=24),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=errors,
        disable=not errors.is_terminal,
    )


def _run(failure: str, work: Callable[[RichReporter], T], *problems: type[Exception]) -> T:
    """Run `work` with its progress shown; a snapshot error, an OSError (or one of `problems`) is a clear failure
    starting with `failure`."""
    try:
        with _progress() as progress:
            return work(RichReporter(progress))
    except (SnapshotError, OSError, *problems) as exc:
        raise fail(f"{failure}: {exc}") from None


def _applied(state: FleetState) -> Fleet:
    applied = state.applied()
    if applied is None:
        raise fail(f"no fleet has run from {state.root}: nothing to back up")
    try:
        return parse(applied[1], applied[0])
    except SpecError as exc:
        raise fail(f"the fleet last applied in {state.root} no longer loads: {exc}") from None


def _default_backups(state: FleetState) -> Path:
    return state.root.parent / f"{state.root.name}-backups"


def backup(
    to: Path | None = BACKUP_TO,
    keep: int = KEEP,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Snapshot the fleet while it runs: databases, every hub's state, homes and shared folders."""
    state = FleetState(state_root(state_dir))
    fleet = _applied(state)
    target = (to or _default_backups(state)).resolve()
    report = _run(
        "backup failed, earlier backups are untouched",
        lambda reporter: backup_fleet(fleet, state.root, target, reporter, keep=keep),
    )
    console.print(
        f"[green]✓[/] snapshot {escape(str(report.snapshot))}: {human_size(report.bytes_total)} in "
        f"{report.files_copied + report.files_linked} files ({report.files_linked} unchanged, linked), "
        f"{human_size(report.bytes_new)} new, {report.seconds:.1f} s"
    )


def restore(
    source: Path = SOURCE,
    state_dir: Path | None = NEW_STATE_DIR,
) -> None:
    """Bring a fleet back from a backup onto a fresh state directory (checksums verified first)."""
    report = _run("restore failed", lambda reporter: restore_fleet(source.resolve(), state_dir, reporter))
    console.print(
        f"[green]✓[/] restored fleet state to {escape(str(report.state_dir))}: hubs {', '.join(report.hubs)}, "
        f"{report.accounts} accounts ({report.seconds:.1f} s)"
    )
    console.print(
        f"Start it with: hubfleet up {escape(str(report.fleet_file))} --state-dir {escape(str(report.state_dir))}"
    )


def _split_hub(text: str, hub: str) -> tuple[str, str]:
    """(the fleet file without `hub`, `hub`'s part of it as YAML)."""
    yaml = YAML()
    data = yaml.load(text)
    part = {"hubs": {hub: data["hubs"].pop(hub)}}
    rest, piece = io.StringIO(), io.StringIO()
    yaml.dump(data, rest)
    yaml.dump(part, piece)
    return rest.getvalue(), piece.getvalue()


def _stop_hub(state: FleetState, hub: str) -> str | None:
    """Stop `hub` if the running fleet has it (by applying the running fleet without it); its part of the fleet
    file, if the fleet file had it."""
    applied = state.applied()
    if applied is None or hub not in parse(applied[1], applied[0]).hubs:
        return None
    source, text = applied
    rest, piece = _split_hub(text, hub)
    if supervisor_pid(state) is None:
        return piece
    try:
        response = ControlClient(state).apply(source, rest)
    except NotRunning:
        return piece
    if response.status_code != 200:
        raise fail(f"could not stop hub {hub}: {response.json().get('error', response.text)}")
    errors.print(
        f"[yellow]stopped hub {escape(hub)}: remove it from {escape(str(source))} too, or the next "
        "`hubfleet apply` starts it again[/]"
    )
    return piece


def archive(
    hub: str = HUB,
    to: Path | None = ARCHIVE_TO,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Stop the hub and write one compressed archive of it (homes, shared folders, state, its database rows)."""
    state = FleetState(state_root(state_dir))
    fleet = _applied(state)
    piece = _stop_hub(state, hub)
    target = (to or state.root.parent / f"{state.root.name}-archives").resolve()
    report = _run("archive failed", lambda reporter: archive_hub(fleet, state.root, hub, target, reporter, spec=piece))
    console.print(
        f"[green]✓[/] {escape(str(report.path))}: {report.files} files, {human_size(report.bytes_in)} → "
        f"{human_size(report.bytes)}, sha256 {report.sha256[:16]}…, {report.seconds:.1f} s"
    )


def decommission(
    hub: str = HUB,
    force: bool = FORCE,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Remove a stopped, archived hub from this machine: accounts, homes, cgroups, shared folders, its rows."""
    state = FleetState(state_root(state_dir))
    fleet = _applied(state)
    if hub in fleet.hubs and running_processes(state.root, hub):
        raise fail(f"hub {hub} is running: `hubfleet hub archive {hub}` stops and archives it first")
    try:
        if not force:
            console.print(f"archive {escape(str(fresh_archive(state.root, hub)))} verified")
        removed = decommission_hub(fleet, state.root, hub, force=force)
    except (SnapshotError, OSError) as exc:
        raise fail(f"{exc} (or --force to remove it without one)") from None
    console.print(
        f"[green]✓[/] hub {escape(hub)} decommissioned: {removed['accounts']} accounts and groups, "
        f"{removed['homes']} home images, {removed['rows']} database rows removed"
    )


def restore_hub_command(
    archive_file: Path = ARCHIVE_FILE,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """Bring an archived hub back (checksums verified first); then add it to the fleet file and apply."""
    state = FleetState(state_root(state_dir)).create()
    fleet = _applied(state)
    hub, piece = _run(
        "restore failed", lambda reporter: restore_hub(fleet, state.root, archive_file.resolve(), reporter), ValueError
    )
    console.print(f"[green]✓[/] hub {escape(hub)} restored from {escape(str(archive_file))}")
    if piece:
        console.print(f"Add it to the fleet file and run `hubfleet apply`:\n{escape(piece)}")


def register(app: typer.Typer) -> None:
    """Add the backup commands and the `hub` group to `app`."""
    app.command()(backup)
    app.command()(restore)
    hub_app.command()(archive)
    hub_app.command()(decommission)
    hub_app.command("restore")(restore_hub_command)
    app.add_typer(hub_app, name="hub")
