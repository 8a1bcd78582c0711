"""The `hubfleet` command line: thin commands that call into the spec, the fleet and the health checks."""

from __future__ import annotations

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
