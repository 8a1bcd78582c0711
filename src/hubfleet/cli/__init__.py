"""The `hubfleet` command line: thin commands that call into the spec, the fleet and the health checks."""

from __future__ import annotations

import platform
from importlib.metadata import version

import typer

from hubfleet.cli import (
    assignment,
    backup,
    check,
    contributions,
    course,
    economics,
    env,
    fleet,
    logs,
    service,
    template,
    usage,
)
from hubfleet.system.startup import skip_slow_optional_imports

app = typer.Typer(
    name="hubfleet",
    help="Run a fleet of JupyterHubs from one fleet file.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        print(
            f"hubfleet {version('hubfleet')} (JupyterHub {version('jupyterhub')}, Python {platform.python_version()})"
        )
        raise typer.Exit()


@app.callback()
def _options(
    show_version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="print hubfleet's version and exit"
    ),
) -> None:
    """Run a fleet of JupyterHubs from one fleet file."""


fleet.register(app)
check.register(app)
template.register(app)
course.register(app)
usage.register(app)
assignment.register(app)
env.register(app)
economics.register(app)
contributions.register(app)
backup.register(app)
service.register(app)
logs.register(app)


def main() -> None:
    """Entry point of the `hubfleet` command."""
    skip_slow_optional_imports()  # before nbformat / JupyterHub are imported by a command
    app()
