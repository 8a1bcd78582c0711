"""What every report command shares: the fleet and its database, month and date options, output as a rich table,
CSV or JSON, and plots (`hubfleet usage|cost|mau|pilots|economics|contributions`)."""

from __future__ import annotations

import csv
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from sqlalchemy.orm import Session

from hubfleet import db
from hubfleet.cli.output import console, errors, fail, print_problems, state_root
from hubfleet.cli.tables import Column, print_table
from hubfleet.common.state import FleetState, database_url
from hubfleet.spec import Fleet, SpecError, load, parse
from hubfleet.usage.cost import BillError

FILE_OPTION: Any = typer.Option(None, "--file", "-f", help="fleet file (default: the fleet last applied)")
CSV_OPTION: Any = typer.Option(False, "--csv", help="CSV on standard output")
JSON_OPTION: Any = typer.Option(False, "--json", help="JSON on standard output")
PLOT_OPTION: Any = typer.Option(None, "--plot", help="also write a plot: FILE.png or FILE.html")
MONTH_OPTION: Any = typer.Option(None, "--month", help="YYYY-MM (default: this month)")


def load_fleet(file: Path | None, state_dir: Path | None) -> tuple[Fleet, Path]:
    if file is not None:
        try:
            fleet = load(file)
        except SpecError as exc:
            print_problems(exc)
            raise typer.Exit(1) from None
        return fleet, state_root(state_dir, fleet)
    root = state_root(state_dir)
    applied = FleetState(root).applied()
    if applied is None:
        raise fail(f"no fleet has run from {root}: give --file or --state-dir")
    try:
        return parse(applied[1], applied[0]), root
    except SpecError as exc:
        print_problems(exc)
        raise typer.Exit(1) from None


def run_report(file: Path | None, state_dir: Path | None, make: Callable[[Session, Fleet], Any]) -> tuple[Fleet, Any]:
    fleet, root = load_fleet(file, state_dir)
    url = database_url(fleet, root)
    if url == db.default_url(root) and not (root / db.DATABASE_FILE).exists():
        raise fail(f"no fleet database in {root} yet: the collector writes it once the fleet runs")
    sessions = db.open_database(url)
    try:
        with sessions() as session:
            return fleet, make(session, fleet)
    except BillError as exc:
        raise fail(str(exc)) from None


def parse_month(text: str | None) -> dt.date:
    if text is None:
        return dt.datetime.now(dt.UTC).date().replace(day=1)
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise fail(f"--month wants YYYY-MM, not {text!r}") from None


def parse_date(text: str | None, option: str, default: dt.date | None = None) -> dt.date | None:
    if text is None:
        return default
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} wants a date YYYY-MM-DD, not {text!r}") from None


def emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    title: str,
    as_csv: bool,
    as_json: bool,
    document: Any = None,
    optional: Sequence[str] = (),
) -> None:
    """Rows as CSV, JSON (`document` if given) or a table fitted to the terminal (`hubfleet.cli.tables`);
    `columns` is (key, heading), `optional` the keys a narrow terminal may leave out, first to last."""
    if as_json:
        print(json.dumps(document if document is not None else list(rows), indent=2, default=str))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, [key for key, _ in columns], extrasaction="ignore")
        writer.writeheader()
        writer.writerows({key: _plain(value) for key, value in row.items()} for row in rows)
    else:
        headings = [Column(heading, right=_numeric(rows, key)) for key, heading in columns]
        cells = [[escape(cell(row.get(key), key in MONEY)) for key, _ in columns] for row in rows]
        keys = [key for key, _ in columns]
        drop = [keys.index(key) for key in optional if key in keys]
        print_table(console, title, headings, cells, drop)


def _numeric(rows: Sequence[dict[str, Any]], key: str) -> bool:
    return any(isinstance(row.get(key), int | float) and not isinstance(row.get(key), bool) for row in rows)


MONEY = {
    "cost",
    "users",
    "idle",
    "prewarm",
    "fee",
    "total",
    "budget",
    "plan_fee",
    "fees",
    "metered_cost",
    "staff_cost",
    "margin",
    "per_user",
    "break_even_fee",
    "break_even_per_user",
}
"""Columns shown as money (two decimals)."""


def cell(value: Any, money: bool = False) -> str:
    if money and isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        if abs(value) >= 100:
            return f"{value:,.2f}"
        if value and abs(value) < 0.0001:
            return "<0.0001" if value > 0 else ">-0.0001"  # not zero, too small to matter: never 2.5e-07
        return f"{value:.4f}".rstrip("0").rstrip(".") or "0"
    return "" if value is None else str(value)


def _plain(value: Any) -> Any:
    """A CSV field: floats in plain decimals (no exponent; spreadsheets and people read them alike)."""
    if isinstance(value, float):
        return f"{value:.10f}".rstrip("0").rstrip(".") or "0"
    return value


def write_plot(
    path: Path | None, figure: Callable[[Any], Any], title: str, rows: Sequence[dict], columns: Sequence
) -> None:
    """Write the plot `figure(plots module)` to `path` (.png or .html, the table under it), if a path is given."""
    if path is None:
        return
    from hubfleet.usage import plots  # matplotlib: loaded only when a plot is asked for

    if path.suffix.lower() not in plots.PLOT_SUFFIXES:
        raise fail(f"--plot writes .png or .html files, not {path.name}")
    table = plots.html_table([h for _, h in columns], [[cell(r.get(k), k in MONEY) for k, _ in columns] for r in rows])
    plots.save(figure(plots), path, title, table)
    errors.print(f"plot written to {escape(str(path))}")
