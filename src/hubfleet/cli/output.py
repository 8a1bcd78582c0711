"""Shared console output for the commands."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from hubfleet.common.settings import HubSettings
from hubfleet.common.state import (
    DEFAULT_STATE_DIR,
    STATE_ENV,
    SYSTEM_FLEET_FILE,
    FleetState,
    state_dir_for,
    system_install,
)
from hubfleet.spec import Fleet, SpecError, load

# Wide enough for the status table when output goes to a file or a pipe.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
console = Console(highlight=False, emoji=False, width=_WIDTH)  # `:100:` in a message stays `:100:`
errors = Console(stderr=True, highlight=False, emoji=False, width=_WIDTH)

STATE_DIR_OPTION: Any = typer.Option(
    None,
    "--state-dir",
    help="fleet state directory (default: $HUBFLEET_STATE_DIR, ./.hubfleet, the state_dir of ./fleet.yaml; as root "
    "then /var/lib/hubfleet)",
)

LOCAL_FLEET_FILE = Path("fleet.yaml")


def state_root(explicit: Path | None, fleet: Fleet | None = None) -> Path:
    """The state directory a command works on, found without repeating arguments where possible: a fleet file
    here (or a system install's) may name it."""
    if explicit is not None or fleet is not None or os.environ.get(STATE_ENV) or Path(DEFAULT_STATE_DIR).is_dir():
        return state_dir_for(fleet, explicit)
    for candidate in (LOCAL_FLEET_FILE, *([SYSTEM_FLEET_FILE] if system_install() else [])):
        if candidate.is_file():
            try:
                return state_dir_for(load(candidate))
            except SpecError:
                pass
    return state_dir_for()


def fleet_file(given: Path | None) -> Path:
    """The fleet file a command works on: the one given, else a system install's /etc/hubfleet/fleet.yaml."""
    if given is not None:
        return given
    if not system_install():
        raise fail("give the fleet file (e.g. `fleet.yaml`)")
    if not SYSTEM_FLEET_FILE.is_file():
        raise fail(f"no fleet file given, and there is no {SYSTEM_FLEET_FILE}: give one, or put the fleet's there")
    return SYSTEM_FLEET_FILE


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print an error and return the Exit to raise."""
    errors.print(f"[bold red]error:[/] {escape(message)}")
    return typer.Exit(code)


def print_problems(exc: SpecError) -> None:
    """Every problem of a fleet file, one block each."""
    count = len(exc.problems)
    errors.print(f"[bold red]{count} problem{'s' if count != 1 else ''}[/] in the fleet file:")
    for problem in exc.problems:
        where = f"{problem.file}:{problem.line}:{problem.column}"
        path = f" [cyan]{escape(problem.path)}[/]:" if problem.path else ""
        errors.print(f"  [bold]{escape(where)}[/]:{path} {escape(problem.message)}", soft_wrap=True)
        if problem.hint:
            errors.print(f"      [dim]hint:[/] {escape(problem.hint)}", soft_wrap=True)
    errors.print("Nothing was changed.")


def hub_settings(state_dir: Path | None, hub: str) -> HubSettings:
    """The settings of `hub` in the fleet's state directory (its API port, service token, fleet-file courses)."""
    state = FleetState(state_root(state_dir))
    if hub not in state.hub_names():
        known = ", ".join(state.hub_names()) or "none"
        raise fail(f"no hub {hub!r} in the fleet state at {state.root} (hubs: {known})")
    try:
        return HubSettings.read(state.hub(hub).settings_file)
    except OSError as exc:
        raise fail(f"cannot read the settings of hub {hub!r}: {exc.strerror} (run as the fleet's operator)") from None


class Steps:
    """Long work done item by item (hubs started, stopped, checked): on a terminal a live progress bar, with a line
    above it for each item done; otherwise (a pipe, a log) only those lines, plain."""

    def __init__(self, what: str, total: int | None, *, quiet: bool = False):
        """`quiet`: show and print nothing (the command prints something else, e.g. JSON)."""
        self.what = what
        self.quiet = quiet
        self.progress: Progress | None = None
        if console.is_terminal and not quiet:
            self.progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self.task = self.progress.add_task(what, total=total)

    def __enter__(self) -> Steps:
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        if self.progress is not None:
            self.progress.stop()

    def doing(self, text: str) -> None:
        """What is under way now (shown on a terminal only)."""
        if self.progress is not None:
            self.progress.update(self.task, description=f"{self.what}: {text}")

    def done(self, line: str, advance: int = 1) -> None:
        """One item finished: its line (rich markup) printed, the bar moved on."""
        if not self.quiet:
            console.print(line, soft_wrap=True)
        if self.progress is not None:
            self.progress.advance(self.task, advance)
