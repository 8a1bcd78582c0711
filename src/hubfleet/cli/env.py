"""Environment commands: build, list, show, logs, rollback, gc (the `environments:` of the fleet file)."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from hubfleet import envs
from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail, print_problems, state_root
from hubfleet.cli.tables import Column, print_table
from hubfleet.common.environments import EnvStore, History
from hubfleet.common.state import FleetState
from hubfleet.spec import Fleet, SpecError, load, parse
from hubfleet.spec.environments import Environment
from hubfleet.spec.units import format_size

app = typer.Typer(
    name="env",
    help="Users' environments (`environments:` in the fleet file): build, list, show, logs, rollback, gc.",
    no_args_is_help=True,
)

FILE_OPTION: Any = typer.Option(
    None, "--file", "-f", help="the fleet file (default: the running fleet's, else ./fleet.yaml)"
)
NAMES_ARGUMENT: Any = typer.Argument(None, help="environments to build (default: every one whose spec changed)")
NAME_ARGUMENT: Any = typer.Argument(..., help="the environment: NAME (the fleet's) or HUB/NAME (a hub's own)")


def _fleet(file: Path | None, state_dir: Path | None) -> Fleet:
    """The fleet file given, else the one the running fleet last applied, else ./fleet.yaml."""
    try:
        if file is not None:
            return load(file)
        applied = FleetState(state_root(state_dir)).applied()
        if applied is not None:
            return parse(applied[1], applied[0])
        return load(Path("fleet.yaml"))
    except SpecError as exc:
        print_problems(exc)
        raise typer.Exit(1) from None


def _used_by(fleet: Fleet) -> dict[str, list[str]]:
    """Environment key → `hub:profile` of every profile that offers it."""
    used: dict[str, list[str]] = {}
    for hub in fleet.hubs.values():
        refs = fleet.environments_of(hub)
        for profile in hub.profiles:
            for name in profile.environments:
                used.setdefault(refs[name].key, []).append(f"{hub.name}:{profile.name}")
    return used


def build_environments(fleet: Fleet, wanted: dict[str, Environment], *, update: bool = False) -> None:
    """Build `wanted` (key → spec) one after the other with a progress bar each, then collect unused versions.

    A failed build prints why and exits 1: that environment keeps its active version, nothing else changes.
    """
    if not wanted:
        return
    if os.geteuid() != 0:
        raise fail("building environments needs root (builds run as an unprivileged build account root switches to)")
    builder = envs.Builder(envs.store_of(fleet), fleet.builds)
    failed = []
    for key, env in wanted.items():
        columns = (TextColumn("[bold]{task.fields[key]}[/]"), BarColumn(), TextColumn("{task.description}"))
        with Progress(*columns, TimeElapsedColumn(), console=console, transient=True) as progress:
            task = progress.add_task("starting", total=None, key=key)

            def say(step: int, steps: int, doing: str, task: Any = task, progress: Progress = progress) -> None:
                progress.update(task, completed=step, total=steps or None, description=escape(doing))

            started = time.monotonic()
            try:
                result = builder.build(key, env, say, update=update)
            except envs.BuildError as exc:
                errors.print(f"[red]✗[/] environment [bold]{escape(key)}[/]: the build failed, nothing changed")
                errors.print(escape(str(exc)), soft_wrap=True)
                errors.print(f"  log: {exc.log}")
                failed.append(key)
                continue
        version = result.version
        how = "built" if result.new_build else "an identical build reused"
        console.print(
            f"[green]✓[/] environment [bold]{escape(key)}[/] v{version.number} active "
            f"({how}, {version.packages} packages, {time.monotonic() - started:.1f} s)"
        )
    collected = envs.collect(envs.store_of(fleet), fleet.builds.keep, fleet.all_environments())
    if collected.versions:
        console.print(f"Removed unused versions: {', '.join(collected.versions)}")
    if failed:
        raise typer.Exit(1)


@app.command("build")
def build(
    names: list[str] = NAMES_ARGUMENT,
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    update: bool = typer.Option(False, "--update", help="resolve again: newer releases of unpinned packages"),
    detach: bool = typer.Option(False, "--detach", "-d", help="build in the background (see `hubfleet env list`)"),
) -> None:
    """Build the fleet file's environments as new versions; new servers start from them once built."""
    fleet = _fleet(file, state_dir)
    every = fleet.all_environments()
    unknown = [name for name in names or [] if name not in every]
    if unknown:
        known = ", ".join(every) or "none"
        raise fail(f"no environment {', '.join(unknown)} in the fleet file (environments: {known})")
    wanted = {name: every[name] for name in names} if names else dict(envs.outdated(fleet))
    if not wanted:
        console.print("Every environment is built: nothing to do (`--update` resolves again).")
        return
    if detach:
        _detach(fleet, file, state_dir, list(wanted), update)
        return
    build_environments(fleet, wanted, update=update)


def _detach(fleet: Fleet, file: Path | None, state_dir: Path | None, names: list[str], update: bool) -> None:
    store = envs.store_of(fleet)
    store.logs.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "hubfleet", "env", "build", *names]
    argv += ["--file", str(file.resolve())] if file is not None else []
    argv += ["--state-dir", str(state_dir.resolve())] if state_dir is not None else []
    argv += ["--update"] if update else []
    output = store.logs / "background-builds.log"
    with open(output, "ab") as out:
        os.chmod(output, 0o600)
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    console.print(
        f"Building {', '.join(names)} in the background (pid {process.pid}): `hubfleet env list` shows progress, "
        f"`hubfleet env logs NAME` the log."
    )


def _state_text(store: EnvStore, history: History) -> str:
    progress = store.progress(history.key)
    if progress is not None and _alive(progress.pid):
        return f"[yellow]building[/] {progress.step}/{progress.steps}: {escape(progress.doing)}"
    if history.failure is not None:
        first = history.failure.error.splitlines()[0] if history.failure.error else "failed"
        return f"[red]last build failed[/]: {escape(first[:60])}"
    if history.active_version is None:
        return "[red]not built[/]"
    return "[green]ready[/]"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@app.command("list")
def list_environments(file: Path | None = FILE_OPTION, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Every environment: its active version, versions on disk, state (building, failed), who uses it."""
    fleet = _fleet(file, state_dir)
    store = envs.store_of(fleet)
    used = _used_by(fleet)
    columns = [Column(heading) for heading in ("environment", "active", "versions", "state", "used by")]
    rows = []
    keys = sorted(set(fleet.all_environments()) | set(store.environment_keys()))
    for key in keys:
        history = store.history(key)
        active = history.active_version
        versions = " ".join(f"v{v.number}" for v in history.live) or "-"
        state = _state_text(store, history)
        if key not in fleet.all_environments():
            state += " [dim](not in the fleet file)[/]"
        active_text = f"v{active.number}" if active else "-"
        rows.append([escape(key), active_text, versions, state, escape(", ".join(used.get(key, [])) or "-")])
    print_table(console, f"environments in {escape(str(store.root))}", columns, rows, note=None)
    if not keys:
        console.print("No environments: profiles run from paths.user_env.")


@app.command("show")
def show(name: str = NAME_ARGUMENT, file: Path | None = FILE_OPTION, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """One environment: its spec, every version (Python, packages, when), the last failure."""
    fleet = _fleet(file, state_dir)
    store = envs.store_of(fleet)
    spec = fleet.all_environments().get(name)
    history = store.history(name)
    if spec is None and not history.versions:
        raise fail(f"no environment {name!r} (environments: {', '.join(fleet.all_environments()) or 'none'})")
    console.print(f"[bold]{escape(name)}[/]: {_state_text(store, history)}")
    if spec is not None:
        packages = ", ".join(spec.packages) or "-"
        console.print(f"  spec: python {spec.python or 'default'}; packages: {escape(packages)}")
        for label, value in (("requirements", spec.requirements_file), ("lock", spec.lock_file)):
            if value is not None:
                console.print(f"  {label}: {escape(str(value))}")
        if spec.debian_packages or spec.kernels:
            debs = escape(", ".join(spec.debian_packages))
            console.print(f"  Debian packages: {debs}; kernels: python, {', '.join(spec.kernels)}")
    columns = [Column("version"), Column("built"), Column("python"), Column("packages", right=True)]
    columns += [Column("build"), Column("state")]
    rows = []
    for version in reversed(history.versions):
        state = "removed" if version.removed else ("[green]active[/]" if version.number == history.active else "")
        built = version.created.astimezone().strftime("%Y-%m-%d %H:%M")
        rows.append([f"v{version.number}", built, version.python, str(version.packages), version.build, state])
    if history.versions:
        print_table(console, None, columns, rows, note=None)
    active = history.active_version
    if active is not None:
        console.print(f"  active: {store.prefix(active.build)}")
        size = envs.disk_use([store.prefix(active.build)])
        console.print(f"  its own disk use (files no other build shares counted once): {format_size(size)}")
    if history.failure is not None:
        errors.print(f"[red]last build failed[/] at {history.failure.at:%Y-%m-%d %H:%M} UTC:")
        errors.print(escape(history.failure.error), soft_wrap=True)
        errors.print(f"  log: {history.failure.log}")


@app.command("logs")
def logs(
    name: str = NAME_ARGUMENT,
    version: int | None = typer.Option(None, "--version", "-v", help="the log of this version's build"),
    follow: bool = typer.Option(False, "--follow", help="keep printing while the build runs"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """The log of an environment's latest build (or of version N's)."""
    store = envs.store_of(_fleet(file, state_dir))
    path = _log_of(store, name, version)
    try:
        log = open(path, encoding="utf-8", errors="replace")  # noqa: SIM115 - read while the build writes
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror} (build logs are root's)") from None
    with log:
        while True:
            chunk = log.read()
            if chunk:
                sys.stdout.write(chunk)
                sys.stdout.flush()
            progress = store.progress(name)
            if not follow or progress is None or progress.log != str(path) or not _alive(progress.pid):
                sys.stdout.write(log.read())  # what the build wrote last
                break
            time.sleep(0.5)


def _log_of(store: EnvStore, name: str, version: int | None) -> Path:
    history = store.history(name)
    progress = store.progress(name)
    if version is not None:
        found = history.version(version)
        if found is None or not found.log:
            raise fail(f"environment {name} has no version v{version}")
        return Path(found.log)
    candidates: list[tuple[dt.datetime, str]] = [(v.created, v.log) for v in history.versions if v.log]
    if history.failure is not None:
        candidates.append((history.failure.at, history.failure.log))
    if progress is not None:
        candidates.append((progress.started, progress.log))
    if not candidates:
        raise fail(f"environment {name} was never built")
    return Path(max(candidates)[1])


@app.command("rollback")
def rollback(
    name: str = NAME_ARGUMENT,
    to: int | None = typer.Option(None, "--to", help="the version to go back to (default: the one before)"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
) -> None:
    """New servers of this environment start from an older version again (running servers keep theirs)."""
    store = envs.store_of(_fleet(file, state_dir))
    try:
        version = envs.rollback(store, name, to)
    except LookupError as exc:
        raise fail(str(exc)) from None
    console.print(
        f"[green]✓[/] environment [bold]{escape(name)}[/]: v{version.number} is active; new servers start from it. "
        "Running servers keep theirs until they restart."
    )


@app.command("gc")
def gc(file: Path | None = FILE_OPTION, state_dir: Path | None = STATE_DIR_OPTION) -> None:
    """Remove versions nothing uses: not active, not among the newest `builds.keep`, no process running in them."""
    fleet = _fleet(file, state_dir)
    store = envs.store_of(fleet)
    before = envs.disk_use([store.builds])
    collected = envs.collect(store, fleet.builds.keep, fleet.all_environments())
    after = envs.disk_use([store.builds])
    removed = ", ".join(collected.versions) or "none"
    console.print(f"Removed versions: {removed}; builds: {len(collected.builds)}; freed {format_size(before - after)}.")


def register(root: typer.Typer) -> None:
    """Add `hubfleet env …` to `root`."""
    root.add_typer(app)
