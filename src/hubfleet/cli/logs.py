"""`hubfleet events` (what happened to the fleet and its hubs, and why) and `hubfleet logs HUB` (a hub's processes'
own logs), both with `--follow`."""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hubfleet.cli.output import STATE_DIR_OPTION, console, fail, state_root
from hubfleet.common import events
from hubfleet.common.state import FleetState
from hubfleet.fleet import logs as fleet_logs

FOLLOW_OPTION: Any = typer.Option(False, "--follow", "-f", help="keep printing what comes (Ctrl-C stops)")
LINES_OPTION: Any = typer.Option(50, "--lines", "-n", min=0, help="how many of the last ones to print first")

_LEVEL_STYLE = {"WARNING": "yellow", "ERROR": "red", "CRITICAL": "red"}


def _event_line(event: events.Event) -> str:
    when = event.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    style = _LEVEL_STYLE.get(event.level)
    text = f"{when}  {escape(event.event):<22} {escape(event.message)}"
    return f"[{style}]{text}[/]" if style else text


def _print_events(found: Iterable[events.Event], as_json: bool) -> None:
    for event in found:
        if as_json:
            print(event.model_dump_json(), flush=True)
        else:
            console.print(_event_line(event), soft_wrap=True)


def _state(state_dir: Path | None) -> FleetState:
    state = FleetState(state_root(state_dir))
    if not state.exists:
        raise fail(f"no fleet has run from {state.root} (give --state-dir?)")
    return state


def events_command(
    state_dir: Path | None = STATE_DIR_OPTION,
    hub: str | None = typer.Option(None, "--hub", help="only the events of this hub"),
    follow: bool = FOLLOW_OPTION,
    lines: int = LINES_OPTION,
    as_json: bool = typer.Option(False, "--json", help="one JSON object a line, as kept in events.jsonl"),
) -> None:
    """What happened to the fleet and its hubs, and why: started, stopped, restarted, crashed, applied, asleep, woke,
    budget alerts (from <state>/events.jsonl)."""
    state = _state(state_dir)
    if hub is not None and hub not in state.hub_names():
        raise fail(
            f"no hub {hub!r} in the fleet state at {state.root} (hubs: {', '.join(state.hub_names()) or 'none'})"
        )
    start = events.size(state.events_file)  # following goes on from where the events read end
    kept = events.read(state.events_file, hub, until=start)
    _print_events(kept[-lines:] if lines else [], as_json)
    if not kept and not follow:
        console.print(f"No events recorded in {state.events_file} yet.")
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            _print_events(events.follow(state.events_file, hub, start=start), as_json)


def logs_command(
    hub: str = typer.Argument(..., help="the hub (see `hubfleet status`)"),
    process: str = typer.Option(
        "hub",
        "--process",
        "-p",
        help="hub (JupyterHub), proxy (the front door's lines about the hub), gateway (Dask Gateway), exchange",
    ),
    state_dir: Path | None = STATE_DIR_OPTION,
    follow: bool = FOLLOW_OPTION,
    lines: int = LINES_OPTION,
) -> None:
    """A hub's own log: its JupyterHub, or its front-door proxy lines, Dask Gateway or assignment exchange."""
    state = _state(state_dir)
    if hub not in state.hub_names():
        raise fail(
            f"no hub {hub!r} in the fleet state at {state.root} (hubs: {', '.join(state.hub_names()) or 'none'})"
        )
    if process not in fleet_logs.PROCESSES:
        raise fail(f"no process {process!r}: choose one of {', '.join(fleet_logs.PROCESSES)}")
    path = fleet_logs.log_of(state, hub, process)  # type: ignore[arg-type]
    if not path.exists():
        what = {"gateway": "a Dask Gateway (dask:)", "exchange": "an assignment exchange (courses: or lti:)"}
        raise fail(
            f"hub {hub} has no {path.name} yet" + (f": does it have {what[process]}?" if process in what else "")
        )
    contains = fleet_logs.mentions(hub, process)  # type: ignore[arg-type]
    start = events.size(path)
    for line in fleet_logs.tail(path, lines, contains, until=start) if lines else []:
        print(line)
    if follow:
        with contextlib.suppress(KeyboardInterrupt):
            for line in _matching(events.follow_lines(path, start=start), contains):
                print(line, flush=True)


def _matching(found: Iterator[str], contains: str | None) -> Iterator[str]:
    return (line for line in found if contains is None or contains in line)


def register(app: typer.Typer) -> None:
    """Add the events and logs commands to `app`."""
    app.command("events")(events_command)
    app.command("logs")(logs_command)
