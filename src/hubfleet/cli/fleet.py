"""Fleet commands: validate, schema, plan, up, apply, status, down."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import typer
from rich.console import Group
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from hubfleet import envs
from hubfleet.cli.env import build_environments
from hubfleet.cli.output import (
    STATE_DIR_OPTION,
    Steps,
    console,
    errors,
    fail,
    fleet_file,
    print_problems,
    state_root,
)
from hubfleet.common import events
from hubfleet.common.state import FleetState
from hubfleet.common.status import FleetStatus, HubStatus
from hubfleet.fleet import leftovers
from hubfleet.fleet import logs as fleet_logs
from hubfleet.fleet.control import ControlClient, NotRunning, supervisor_pid, supervisor_process
from hubfleet.fleet.fit import machine_warnings
from hubfleet.fleet.plan import FleetPlan, plan
from hubfleet.fleet.processes import signal_process
from hubfleet.spec import Fleet, SpecError, json_schema, load, parse
from hubfleet.spec.auth import SharedPasswordAuth
from hubfleet.spec.models import Logs
from hubfleet.system import cgroups, pidfiles
from hubfleet.usage.storage import quota_problems

FILE_ARGUMENT: Any = typer.Argument(
    None, help="the fleet file (YAML; as root, default /etc/hubfleet/fleet.yaml)", show_default=False
)


def load_or_exit(path: Path) -> Fleet:
    try:
        return load(path)
    except SpecError as exc:
        print_problems(exc)
        raise typer.Exit(1) from None


def validate(file: Path | None = FILE_ARGUMENT) -> None:
    """Check a fleet file and report every problem at once (file:line:column, field, hint)."""
    file = fleet_file(file)
    fleet = load_or_exit(file)
    console.print(
        f"[green]✓[/] {escape(str(file))}: fleet [bold]{fleet.name}[/] with {len(fleet.hubs)} hub(s): "
        + ", ".join(fleet.hubs)
    )
    _warn_about_machine(fleet)


def _warn_about_machine(fleet: Fleet) -> None:
    """What of the (valid) fleet does not fit this machine."""
    for warning in machine_warnings(fleet):
        errors.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)


def schema() -> None:
    """Print the fleet file's JSON Schema (point your editor's YAML language server at it)."""
    print(json.dumps(json_schema(), indent=2))


def applied_fleet(state: FleetState) -> Fleet | None:
    applied = state.applied()
    if applied is None:
        return None
    source, text = applied
    try:
        return parse(text, source)
    except SpecError:
        return None


def _print_plan(changes: FleetPlan) -> None:
    if changes.empty:
        console.print("No changes: the fleet matches the file.")
        return
    for field in changes.fleet_changed:
        console.print(f"[yellow]![/] fleet setting [bold]{field}[/] changed: needs `hubfleet down` then `hubfleet up`")
    symbols = {"added": "[green]+[/]", "removed": "[red]-[/]", "changed": "[yellow]~[/]", "unchanged": " "}
    for change in changes.hubs:
        if change.kind == "unchanged":
            continue
        console.print(f"{symbols[change.kind]} hub [bold]{change.name}[/]: {change.kind}")
        if change.kind == "changed":
            for line in change.lines():
                console.print(f"    {escape(line)}")


def plan_command(
    file: Path | None = FILE_ARGUMENT,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show what `apply` would change on the running fleet (with none running: what `up` would start differently
    from the last run)."""
    desired = load_or_exit(fleet_file(file))
    state = FleetState(state_root(state_dir, desired))
    current = applied_fleet(state)
    changes = plan(current, desired)
    to_build = [key for key, _ in envs.outdated(desired)]
    if as_json:
        print(json.dumps({**changes.to_dict(), "environments_to_build": to_build}, indent=2))
        return
    if supervisor_pid(state) is None:
        against = "the fleet file it last ran" if current is not None else "nothing: it never ran"
        console.print(f"[dim]No fleet is running from {escape(str(state.root))}; compared with {against}.[/]")
    _print_plan(changes)
    for key in to_build:
        console.print(
            f"[yellow]~[/] environment [bold]{escape(key)}[/]: built as a new version first; new servers start from "
            "it, running ones keep theirs"
        )
    _refuse_lower_quotas(current, desired)


def _refuse_lower_quotas(current: Fleet | None, desired: Fleet) -> None:
    """Stop (exit 1) when a home quota would fall below what a home already holds."""
    problems = quota_problems(current, desired)
    for problem in problems:
        errors.print(f"[red]✗[/] {escape(problem)}")
    if problems:
        raise fail("a home quota below a home's use cannot be applied; nothing was changed")


def _check_ready_to_run(fleet: Fleet) -> None:
    singleuser = fleet.paths.user_env / "bin" / "jupyterhub-singleuser"
    if not os.access(singleuser, os.X_OK):
        raise fail(f"the user environment has no {singleuser}: run `make setup` or set paths.user_env")
    if os.geteuid() != 0:
        errors.print(
            "[bold yellow]WARNING: not running as root — every user's server runs as YOUR user, with no isolation "
            "between users, no cgroup limits and no home quotas. Run as root for real Unix users and limits.[/]"
        )
    elif cgroups.detect() is None:
        errors.print("[bold yellow]WARNING: no writable cgroup hierarchy: memory and CPU limits are not enforced.[/]")


def _print_logins(fleet: Fleet) -> None:
    """The demo logins of shared-password hubs — on a terminal only, so that passwords never land in a log."""
    if not console.is_terminal:
        return
    for hub in fleet.hubs.values():
        auth = hub.auth
        if isinstance(auth, SharedPasswordAuth) and auth.password is not None:
            users = ", ".join(sorted(hub.users - set(auth.admins))) or "any name"
            password = auth.password.get_secret_value()
            console.print(f"  {hub.name}: log in as {escape(users)} with password {escape(password)}")
            if auth.admins and auth.admin_password is not None:
                admins = ", ".join(sorted(auth.admins))
                admin_password = auth.admin_password.get_secret_value()
                console.print(f"  {hub.name}: admins {escape(admins)} with password {escape(admin_password)}")


def _status_table(document: FleetStatus, caption: str | None = None) -> Group:
    """The status table, then each hub's URL on a line of its own (a URL is never cut to fit a column)."""
    table = Table(title=f"fleet {document.fleet} — {document.front_door}", title_justify="left", caption=caption)
    longest = max((len(hub.name) for hub in document.hubs), default=3)
    table.add_column("hub", no_wrap=True, min_width=longest)
    table.add_column("state")
    table.add_column("pids", no_wrap=True)  # a pid is never cut in two; one process a line
    for column in ("users", "servers", "restarts"):
        table.add_column(column, justify="right")
    for hub in document.hubs:
        state = _state_cell(hub)
        pids = "\n".join(f"{k} {v}" for k, v in hub.pids.items() if v)
        restarts = sum(hub.restarts.values())
        users = "" if hub.users is None else str(hub.users)
        servers = "" if hub.running_servers is None else str(hub.running_servers)
        detail = f"\n[dim]{escape(hub.detail)}[/]" if hub.detail else ""
        table.add_row(escape(hub.name), state + detail, pids, users, servers, str(restarts))
    urls = Text("\n".join(f"  {hub.name:<{longest}}  {hub.url}" for hub in document.hubs), overflow="fold")
    return Group(table, urls)


def _state_cell(hub: HubStatus) -> str:
    """A hub's state for the table: up, asleep or what is wrong, and how often and when it last woke."""
    cell = "[green]up[/]" if hub.healthy else f"[red]{hub.state}[/]"
    if hub.state == "asleep":
        cell = "[blue]asleep[/]"
    if hub.last_wake is not None:
        times = "once" if hub.wakes == 1 else f"{hub.wakes} times"
        cell += f"\n[dim]woke {times}\nlast {time.strftime('%H:%M', time.localtime(hub.last_wake))}[/]"
    return cell


def _setup_logging(state: FleetState, verbose: bool, limits: Logs) -> None:
    handler = fleet_logs.handler(state.supervisor_log, limits)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    # Routine chatter of libraries (each request; the database's migrations at every start) stays out.
    for noisy in ("httpx", "tornado.access", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def up(
    file: Path | None = FILE_ARGUMENT,
    state_dir: Path | None = STATE_DIR_OPTION,
    detach: bool = typer.Option(False, "--detach", "-d", help="run in the background and return once hubs are up"),
    live: bool = typer.Option(True, "--live/--no-live", help="show a live status view (foreground only)"),
    verbose: bool = typer.Option(False, "--verbose", help="debug logging in supervisor.log"),
) -> None:
    """Start every hub of the fleet file behind one front door (foreground, or --detach)."""
    from hubfleet.fleet.supervisor import Supervisor

    file = fleet_file(file)
    source = file.resolve()
    fleet = load_or_exit(file)
    state = FleetState(state_root(state_dir, fleet)).create()
    if supervisor_pid(state) is not None:
        raise fail(f"a fleet is already running from {state.root}: use `hubfleet apply` or `hubfleet down`")
    found = leftovers.clean_up(state)  # what a supervisor that died left (after a crash, before a service restart)
    _report_leftovers(found)
    if found.stopped:
        console.print(f"Stopped {found.stopped} process(es) a previous supervisor of {state.root} left running.")
    _check_ready_to_run(fleet)
    _warn_about_machine(fleet)
    build_environments(fleet, dict(envs.outdated(fleet)))
    if detach:
        _up_detached(source, state, verbose, len(fleet.hubs))
        return
    _setup_logging(state, verbose, fleet.logs)
    text = source.read_text(encoding="utf-8")
    supervisor = Supervisor(fleet, source, text, state)

    async def ready(sup: Supervisor) -> None:
        document = await sup.status_document()
        show_live = live and console.is_terminal
        if not show_live:
            console.print(_status_table(document))
        _print_logins(fleet)
        stop_hint = "Ctrl-C or `hubfleet down`" if console.is_terminal else "`hubfleet down`"
        console.print(f"Fleet up at [bold]{sup.front_door.url}/[/] — {stop_hint} stops it.")
        if show_live:
            asyncio.get_running_loop().create_task(_live_view(sup))

    asyncio.run(supervisor.run(on_ready=ready))
    console.print("Fleet stopped.")


async def _live_view(supervisor: Any) -> None:
    with Live(console=console, refresh_per_second=1, transient=True) as view:
        while not supervisor.stopping:
            document = await supervisor.status_document()
            view.update(_status_table(document, caption=f"updated {time.strftime('%H:%M:%S')}"))
            await asyncio.sleep(2)


def _up_detached(source: Path, state: FleetState, verbose: bool, hubs: int) -> None:
    argv = [sys.executable, "-m", "hubfleet", "up", str(source), "--state-dir", str(state.root), "--no-live"]
    if verbose:
        argv.append("--verbose")
    news = events.Tail(state.events_file, events.size(state.events_file))  # hubs coming up, as the supervisor says
    with open(state.root / "supervisor.out", "ab") as out:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    client = ControlClient(state, timeout=10)
    deadline = time.monotonic() + 300
    with Steps("Starting the fleet in the background", hubs) as steps:
        steps.doing("the supervisor starts")
        while time.monotonic() < deadline:
            _show_progress(news, steps)
            if process.poll() is not None:
                raise fail(f"the fleet supervisor exited with {process.returncode}; see {state.root}/supervisor.out")
            try:
                document = client.status()
            except (NotRunning, OSError, ValueError, httpx.HTTPError):  # starting, or too busy to answer yet
                time.sleep(0.2)
                continue
            if document.ready:
                break
            time.sleep(0.2)
        else:
            raise fail("the fleet did not come up within 300 s; see supervisor.log in the state directory")
        _show_progress(news, steps)
    news.close()
    console.print(_status_table(document))
    _print_logins(load(source))
    console.print(f"Fleet running in the background (pid {process.pid}); `hubfleet down` stops it.")
    if not document.healthy:
        raise typer.Exit(1)


_PROGRESS = {
    "hub.started": "[green]✓[/]",
    "hub.failed": "[red]✗[/]",
    "hub.stopped": "[green]✓[/]",
}
"""The events that are progress (a hub started, failed, stopped), and their marks."""


def _show_progress(news: events.Tail, steps: Steps) -> None:
    """Print the hubs' events since the last look as steps done."""
    for event in news.events():
        if event.event in _PROGRESS:
            mark = "[red]✗[/]" if event.level == "ERROR" else _PROGRESS[event.event]
            steps.done(f"{mark} {escape(event.message)}")
        elif event.event == "fleet.starting":
            steps.doing("hubs start")


def apply(file: Path | None = FILE_ARGUMENT, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Change the running fleet to match the fleet file, hub by hub; an invalid file changes nothing."""
    file = fleet_file(file)
    source = file.resolve()
    fleet = load_or_exit(file)
    state = FleetState(state_root(state_dir, fleet))
    _refuse_lower_quotas(applied_fleet(state), fleet)
    # What changed is built first (servers keep running); a failed build stops here, before anything changed.
    build_environments(fleet, dict(envs.outdated(fleet)))
    try:
        with console.status("Applying…"):
            response = ControlClient(state).apply(source, source.read_text(encoding="utf-8"))
    except NotRunning as exc:
        raise fail(f"{exc}: start it with `hubfleet up {file}`") from None
    document = response.json()
    if response.status_code != 200:
        raise fail(document.get("error", response.text))
    changes = document["plan"]
    applied = [h for h in changes["hubs"] if h["kind"] != "unchanged"]
    if not applied:
        console.print("No changes: the running fleet already matches the file.")
    for hub in applied:
        console.print(f"[green]✓[/] hub [bold]{hub['name']}[/]: {hub['kind']}")
    for name, reason in document["failed"].items():
        errors.print(f"[red]✗[/] hub [bold]{name}[/]: {escape(reason)}")
    if document["failed"]:
        raise typer.Exit(1)


def status(
    state_dir: Path | None = STATE_DIR_OPTION,
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
) -> None:
    """Show the running fleet: hubs, URLs, pids, health, users and running servers."""
    state = FleetState(state_root(state_dir))
    try:
        document = ControlClient(state, timeout=30).status()
    except NotRunning as exc:
        if as_json:
            print(json.dumps({"running": False, "error": str(exc)}))
        else:
            errors.print(f"[yellow]{escape(str(exc))}[/]")
        raise typer.Exit(3) from None
    if as_json:
        print(json.dumps({"running": True, **document.model_dump(mode="json")}, indent=2))
        return
    console.print(_status_table(document))
    if not document.healthy:
        raise typer.Exit(1)


HUB_ARGUMENT = typer.Argument(..., help="the hub's name in the fleet file")


def sleep(hub: str = HUB_ARGUMENT, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Put HUB to sleep now, without waiting for its idle time (before a quiet weekend, say); it wakes on the next
    request as usual. Refused while it is at work: a server or a user's process runs, a course meets, grading or
    a passback is under way."""
    _ask_supervisor(ControlClient.sleep, hub, state_dir, f"hub {hub} is asleep")


def wake(hub: str = HUB_ARGUMENT, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Wake HUB now (ahead of a class, say) and return once it answers; it sleeps again after its idle time."""
    _ask_supervisor(ControlClient.wake, hub, state_dir, f"hub {hub} is awake")


def _ask_supervisor(action: Callable[[ControlClient, str], None], hub: str, state_dir: Path | None, done: str) -> None:
    try:
        action(ControlClient(FleetState(state_root(state_dir)), timeout=180), hub)
    except (NotRunning, RuntimeError) as exc:
        raise fail(str(exc)) from None
    console.print(done)


def down(state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Stop the fleet: user servers, hubs, proxies and the front door; nothing is left running."""
    state = FleetState(state_root(state_dir))
    supervisor = supervisor_process(state)
    if supervisor is None and pidfiles.stale(state.supervisor_pid_file):
        _say_stale(state.supervisor_pid_file)
        state.supervisor_pid_file.unlink(missing_ok=True)
    if supervisor is not None:
        _stop_supervisor(state, supervisor)
    found = leftovers.clean_up(state)
    _report_leftovers(found)
    if supervisor is None and not found.stopped:
        console.print(f"No fleet is running from {state.root}.")
        return
    console.print("Fleet stopped." + (f" (also stopped {found.stopped} orphaned process(es))" if found.stopped else ""))


def _stop_supervisor(state: FleetState, supervisor: pidfiles.ProcessRecord) -> None:
    """Ask the supervisor to stop everything, and show the hubs going down until it is gone (180 s at most)."""
    client = ControlClient(state, timeout=30)
    try:
        hubs: int | None = len(client.status().hubs)
    except (NotRunning, OSError, ValueError, httpx.HTTPError):
        hubs = None
    news = events.Tail(state.events_file, events.size(state.events_file))
    with Steps("Stopping user servers, hubs and proxies", hubs) as steps:
        try:
            client.down()
        except NotRunning:
            signal_process(supervisor, signal.SIGTERM)
        deadline = time.monotonic() + 180
        while supervisor.alive() and time.monotonic() < deadline:
            _show_progress(news, steps)
            time.sleep(0.2)
        _show_progress(news, steps)
    news.close()
    if supervisor.alive():
        raise fail(f"the supervisor (pid {supervisor.pid}) did not stop within 180 s")


def _report_leftovers(found: leftovers.Leftovers) -> None:
    for path in found.stale:
        _say_stale(path)
    for warning in found.warnings:
        console.print(f"[yellow]{escape(warning)}[/]")


def _say_stale(pid_file: Path) -> None:
    record = pidfiles.read(pid_file)
    what = f"pid {record.pid} is no longer the process it recorded" if record else "it records no process"
    console.print(f"[yellow]Removed the stale pid file {escape(str(pid_file))}: {what} (nothing was signalled).[/]")


def register(app: typer.Typer) -> None:
    """Add the fleet commands to `app`."""
    app.command()(validate)
    app.command()(schema)
    app.command("plan")(plan_command)
    app.command()(up)
    app.command()(apply)
    app.command()(status)
    app.command()(down)
    app.command()(sleep)
    app.command()(wake)
