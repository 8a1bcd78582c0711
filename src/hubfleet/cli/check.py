"""`hubfleet check`: a synthetic user goes through each hub end to end, through the front door."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import typer
from rich.markup import escape
from rich.table import Table

from hubfleet.cli.output import STATE_DIR_OPTION, Steps, console, fail, state_root
from hubfleet.cli.tables import chrome
from hubfleet.common.hubapi import HubAPI
from hubfleet.common.settings import CHECK_USER, HubSettings
from hubfleet.common.state import FleetState
from hubfleet.fleet.control import ControlClient, NotRunning
from hubfleet.health.check import CheckReport, PasswordLogin, TokenLogin, run_check


async def _login_for(settings: HubSettings, hub_url: str) -> PasswordLogin | TokenLogin:
    """The shared password where there is one (a real form login), else a short-lived token minted by the fleet."""
    if settings.auth_type == "shared-password":
        return PasswordLogin(CHECK_USER, settings.secret("shared_password"))
    async with HubAPI(f"{hub_url}hub/api", settings.secret("service_token")) as api:
        token = await api.new_token(CHECK_USER, note="hubfleet check", expires_in=600)
    return TokenLogin(CHECK_USER, token)


async def check_hubs(
    state: FleetState, front_door: str, names: list[str], timeout: float, steps: Steps
) -> list[CheckReport]:
    """Run the check on each hub in turn (one at a time, so timings are not skewed by each other)."""
    reports = []
    for index, name in enumerate(names, 1):
        steps.doing(f"hub {name} ({index}/{len(names)})")
        settings = HubSettings.read(state.hub(name).settings_file)
        hub_url = f"{front_door}{settings.base_url}"
        login = await _login_for(settings, hub_url)
        report = await run_check(name, hub_url, login, timeout=timeout, dask=settings.gateway is not None)
        reports.append(report)
        failed = next((f" at {step.name}" for step in report.steps if not step.ok), "")
        if report.ok:
            steps.done(f"[green]✓[/] hub [bold]{escape(name)}[/]: pass in {report.total_seconds:.1f} s")
        else:
            steps.done(f"[red]✗[/] hub [bold]{escape(name)}[/]: FAIL{escape(failed)}")
    return reports


def _report_table(reports: list[CheckReport], width: int) -> Table:
    """One row a hub; its steps flow onto as many lines as `width` needs, each step's name and time together."""
    table = Table(title="hubfleet check", title_justify="left")
    for column in ("hub", "result", "total", "steps"):
        table.add_column(column)
    totals = [f"{report.total_seconds:.2f}s" for report in reports]
    taken = (
        max(map(len, ["hub", *(report.hub for report in reports)])) + len("result") + max(map(len, ["total", *totals]))
    )
    room = width - taken - chrome(4)
    for report, total in zip(reports, totals, strict=True):
        lines: list[str] = []
        used = 0
        for step in report.steps:
            plain = f"{step.name} {step.seconds:.2f}s"
            item = f"[{'green' if step.ok else 'red'}]{escape(step.name)}[/] {step.seconds:.2f}s"
            if not step.ok and step.detail:  # a failure's reason: on a line of its own, wrapped as it needs
                lines.append(f"{item} [dim]{escape(step.detail)}[/]")
                used = room
            elif lines and used + 2 + len(plain) <= room:
                lines[-1] += f"  {item}"
                used += 2 + len(plain)
            else:
                lines.append(item)
                used = len(plain)
        result = "[green]pass[/]" if report.ok else "[red]FAIL[/]"
        table.add_row(escape(report.hub), result, total, "\n".join(lines))
    return table


def check(
    hub: str | None = typer.Argument(None, help="the hub to check (default: every hub)"),
    state_dir: Path | None = STATE_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    timeout: float = typer.Option(120.0, help="seconds allowed per hub"),
) -> None:
    """Log a synthetic user in, start a server, run code in a kernel, stop it; exit 1 if any hub fails."""
    state = FleetState(state_root(state_dir))
    try:
        document = ControlClient(state, timeout=30).status()
    except NotRunning as exc:
        raise fail(str(exc), code=3) from None
    known = [h.name for h in document.hubs]
    if hub is not None and hub not in known:
        raise fail(f"no hub {hub!r} is running (hubs: {', '.join(known)})")
    names = [hub] if hub else known
    with Steps("Checking hubs", len(names), quiet=as_json) as steps:
        reports = asyncio.run(check_hubs(state, document.front_door, names, timeout, steps))
    if as_json:
        print(json.dumps({"ok": all(r.ok for r in reports), "hubs": [r.to_dict() for r in reports]}, indent=2))
    else:
        console.print(_report_table(reports, console.width))
    if not all(r.ok for r in reports):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the check command to `app`."""
    app.command()(check)
