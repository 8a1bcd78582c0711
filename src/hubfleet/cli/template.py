"""Template commands: list the community templates, show one."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table

from hubfleet.cli.output import console, fail
from hubfleet.spec import templates

app = typer.Typer(
    name="template",
    help="Community templates a hub starts from (`template:` in the fleet file).",
    no_args_is_help=True,
)

NAME_ARGUMENT: Any = typer.Argument(..., help="the template's name (see `hubfleet template list`)")


@app.command("list")
def list_templates() -> None:
    """List the community templates, one line each."""
    table = Table(title="community templates", title_justify="left")
    table.add_column("name")
    table.add_column("description")
    for name in templates.names():
        table.add_row(name, escape(templates.get(name).description))
    console.print(table)
    console.print(
        "Use one with `template: NAME` in a hub (or in `defaults:`); `hubfleet template show NAME` prints it."
    )


@app.command("show")
def show(name: str = NAME_ARGUMENT) -> None:
    """Print a template's hub keys (YAML): what a hub with `template: NAME` starts from."""
    try:
        template = templates.get(name)
    except templates.UnknownTemplate as exc:
        raise fail(str(exc)) from None
    header = (
        f"# Template {template.name}: {template.description}\n"
        f"# A hub with `template: {template.name}` starts from these keys; its own keys and `defaults:` win.\n"
        "# To adapt it, copy the keys you change into the hub (mappings merge key by key, lists replace).\n"
    )
    print(header + template.hub_text(), end="")


def register(root: typer.Typer) -> None:
    """Add `hubfleet template …` to `root`."""
    root.add_typer(app)
