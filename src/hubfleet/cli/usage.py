"""Usage and cost reports: `hubfleet usage|cost|mau|pilots`, read straight from the fleet database.

Each prints a rich table, or `--csv` / `--json`, and writes a plot with `--plot FILE.png|FILE.html`. The fleet is
the one last applied in the state directory, or `--file` (its `usage.metering.database_url`, else the state
directory's fleet.sqlite).
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.orm import Session

from hubfleet import db
from hubfleet.cli.output import STATE_DIR_OPTION, console, errors, fail, print_problems, state_root
from hubfleet.common.state import FleetState, database_url
from hubfleet.spec import Fleet, SpecError, load, parse
from hubfleet.usage.cost import BillError
from hubfleet.usage.reports import cost_report, monthly_active_users, pilot_statuses, usage_report
from hubfleet.usage.storage import storage_report

FILE_OPTION: Any = typer.Option(None, "--file", "-f", help="fleet file (default: the fleet last applied)")
CSV_OPTION: Any = typer.Option(False, "--csv", help="CSV on standard output")
JSON_OPTION: Any = typer.Option(False, "--json", help="JSON on standard output")
PLOT_OPTION: Any = typer.Option(None, "--plot", help="also write a plot: FILE.png or FILE.html")
MONTH_OPTION: Any = typer.Option(None, "--month", help="YYYY-MM (default: this month)")


def _fleet(file: Path | None, state_dir: Path | None) -> tuple[Fleet, Path]:
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


def _report(file: Path | None, state_dir: Path | None, make: Callable[[Session, Fleet], Any]) -> tuple[Fleet, Any]:
    fleet, root = _fleet(file, state_dir)
    url = database_url(fleet, root)
    if url == db.default_url(root) and not (root / db.DATABASE_FILE).exists():
        raise fail(f"no fleet database in {root} yet: the collector writes it once the fleet runs")
    sessions = db.open_database(url)
    try:
        with sessions() as session:
            return fleet, make(session, fleet)
    except BillError as exc:
        raise fail(str(exc)) from None


def _month(text: str | None) -> dt.date:
    if text is None:
        return dt.datetime.now(dt.UTC).date().replace(day=1)
    try:
        return dt.datetime.strptime(text, "%Y-%m").date()
    except ValueError:
        raise fail(f"--month wants YYYY-MM, not {text!r}") from None


def _date(text: str | None, option: str, default: dt.date | None = None) -> dt.date | None:
    if text is None:
        return default
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise fail(f"{option} wants a date YYYY-MM-DD, not {text!r}") from None


def _emit(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str]],
    title: str,
    as_csv: bool,
    as_json: bool,
    document: Any = None,
) -> None:
    """Rows as CSV, JSON (`document` if given) or a rich table; `columns` is (key, heading)."""
    if as_json:
        print(json.dumps(document if document is not None else list(rows), indent=2, default=str))
    elif as_csv:
        writer = csv.DictWriter(sys.stdout, [key for key, _ in columns], extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    else:
        table = Table(title=title)
        for key, heading in columns:
            numeric = bool(rows) and isinstance(rows[0].get(key), int | float) and not isinstance(rows[0][key], bool)
            table.add_column(heading, justify="right" if numeric else "left")
        for row in rows:
            table.add_row(*(escape(_cell(row.get(key), key in MONEY)) for key, _ in columns))
        console.print(table)


MONEY = {"cost", "users", "idle", "fee", "total", "budget", "plan_fee"}
"""Columns shown as money (two decimals)."""


def _cell(value: Any, money: bool = False) -> str:
    if money and isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) >= 100 else f"{value:.4g}" if value else "0"
    return "" if value is None else str(value)


def _plot(path: Path | None, figure: Callable[[Any], Any], title: str, rows: Sequence[dict], columns: Sequence) -> None:
    """Write the plot `figure(plots module)` to `path` (.png or .html, the table under it), if a path is given."""
    if path is None:
        return
    from hubfleet.usage import plots  # matplotlib: loaded only when a plot is asked for

    if path.suffix.lower() not in plots.PLOT_SUFFIXES:
        raise fail(f"--plot writes .png or .html files, not {path.name}")
    table = plots.html_table([h for _, h in columns], [[_cell(r.get(k), k in MONEY) for k, _ in columns] for r in rows])
    plots.save(figure(plots), path, title, table)
    errors.print(f"plot written to {escape(str(path))}")


def usage(
    hub: str | None = typer.Option(None, "--hub", help="only this hub"),
    by: str = typer.Option("user", "--by", help="user, group or day"),
    since: str | None = typer.Option(None, "--since", help="first day, YYYY-MM-DD (default: the 1st of this month)"),
    until: str | None = typer.Option(None, "--until", help="last day, YYYY-MM-DD (default: today)"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
    storage: bool = typer.Option(False, "--storage", help="each home's use against its quota, now (this machine)"),
) -> None:
    """Usage per user, group or day: charged and used vCPU-hours and GiB-hours, storage, logins, cost."""
    if storage:
        _storage(hub, file, state_dir, as_csv, as_json)
        return
    if by not in ("user", "group", "day"):
        raise fail("--by is one of user, group, day")
    first = _date(since, "--since", dt.datetime.now(dt.UTC).date().replace(day=1))
    last = _date(until, "--until")
    fleet, rows = _report(
        file,
        state_dir,
        lambda session, fleet: usage_report(session, fleet, hub=hub, by=by, since=first, until=last),  # type: ignore[arg-type]
    )
    if hub is not None and hub not in fleet.hubs and not rows:
        raise fail(f"no hub {hub!r} in fleet {fleet.name!r}")
    records = [dataclasses.asdict(row) for row in rows]
    currency = fleet.usage.rates.currency
    columns = [
        ("hub", "hub"),
        ("key", by),
        ("cpu_hours", "vCPU-h"),
        ("used_cpu_hours", "used vCPU-h"),
        ("memory_gb_hours", "GiB-h"),
        ("used_memory_gb_hours", "used GiB-h"),
        ("dask_cpu_hours", "Dask vCPU-h"),
        ("server_hours", "server h"),
        ("storage_gb", "home GiB"),
        ("logins", "logins"),
        ("cost", f"cost {currency}"),
    ]
    title = f"Usage by {by} from {first} to {last or 'today'}" + (f", hub {hub}" if hub else "")
    _emit(records, columns, title, as_csv, as_json)
    _plot(plot, lambda plots: plots.usage_figure(rows, by), title, records, columns)


def _storage(hub: str | None, file: Path | None, state_dir: Path | None, as_csv: bool, as_json: bool) -> None:
    """`usage --storage`: every home's use and quota, read from this machine (not from the ledger)."""
    fleet, _ = _fleet(file, state_dir)
    if hub is not None and hub not in fleet.hubs:
        raise fail(f"no hub {hub!r} in fleet {fleet.name!r}")
    rows = storage_report(fleet, hub)
    records = [
        {
            **dataclasses.asdict(row),
            "used_gib": row.used / 1024**3,
            "size_gib": row.size / 1024**3 if row.size is not None else None,
            "quota_gib": row.quota / 1024**3 if row.quota is not None else None,
            "percent": f"{row.percent:.0f}%" if row.percent is not None else "",
            "state": "mounted" if row.mounted else ("image" if row.size is not None else "no quota"),
        }
        for row in rows
    ]
    columns = [
        ("hub", "hub"),
        ("user", "user"),
        ("used_gib", "used GiB"),
        ("size_gib", "limit GiB"),
        ("percent", "use"),
        ("quota_gib", "quota GiB"),
        ("state", "home"),
    ]
    title = "Home use against quota, now" + (f", hub {hub}" if hub else "")
    _emit(records, columns, title, as_csv, as_json, [dataclasses.asdict(row) for row in rows])


def cost(
    month: str | None = MONTH_OPTION,
    hub: str | None = typer.Option(None, "--hub", help="only this hub, line by line"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Each hub's cost for a month: users, idle capacity and fees, against its budget (`--hub` for its lines)."""
    first = _month(month)
    _, report = _report(file, state_dir, lambda session, fleet: cost_report(session, fleet, month=first))
    source = "bill shared by usage" if report.source == "bill" else "rate card"
    if hub is not None:
        try:
            hub_cost = report.hub(hub)
        except KeyError:
            raise fail(f"no hub {hub!r} in the report") from None
        records = [{"hub": hub, **dataclasses.asdict(line)} for line in hub_cost.lines]
        columns = [
            ("kind", "kind"),
            ("name", "name"),
            ("cpu_hours", "vCPU-h"),
            ("memory_gb_hours", "GiB-h"),
            ("storage_gb_months", "GiB-months"),
            ("cost", f"cost {report.currency}"),
        ]
        title = f"Hub {hub}, {first:%B %Y} ({source}): total {hub_cost.total:.2f} {report.currency}"
        _emit(records, columns, title, as_csv, as_json, dataclasses.asdict(hub_cost))
        _plot(plot, lambda plots: plots.cost_figure(report), title, records, columns)
        return
    records = []
    for hub_cost in report.hubs:
        sums = {kind: sum((line.cost for line in hub_cost.of_kind(kind)), 0.0) for kind in ("user", "idle", "fee")}
        top = hub_cost.of_kind("user")[:1]
        records.append(
            {
                "hub": hub_cost.hub,
                "plan": hub_cost.plan,
                "users": sums["user"],
                "idle": sums["idle"],
                "fee": sums["fee"],
                "total": hub_cost.total,
                "budget": hub_cost.budget,
                "budget_used": f"{hub_cost.budget_fraction:.0%}" if hub_cost.budget_fraction is not None else "",
                "plan_fee": hub_cost.plan_fee,
                "top_user": f"{top[0].name} ({top[0].cost:,.2f})" if top else "",
            }
        )
    columns = [
        ("hub", "hub"),
        ("plan", "plan"),
        ("users", "users"),
        ("idle", "idle capacity"),
        ("fee", "fees"),
        ("total", f"total {report.currency}"),
        ("budget", "budget"),
        ("budget_used", "budget used"),
        ("plan_fee", "plan fee"),
        ("top_user", "top user"),
    ]
    title = f"Cost, {first:%B %Y} ({source}): {report.total:.2f} {report.currency}"
    _emit(records, columns, title, as_csv, as_json, dataclasses.asdict(report))
    _plot(plot, lambda plots: plots.cost_figure(report), title, records, columns)


def mau(
    month: str | None = MONTH_OPTION,
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Monthly active users of each hub."""
    first = _month(month)
    _, counts = _report(file, state_dir, lambda session, fleet: monthly_active_users(session, fleet, month=first))
    records = [{"hub": hub, "active_users": count} for hub, count in counts.items()]
    columns = [("hub", "hub"), ("active_users", "active users")]
    title = f"Monthly active users, {first:%B %Y}"
    _emit(records, columns, title, as_csv, as_json, counts)
    _plot(plot, lambda plots: plots.counts_figure(counts, title), title, records, columns)


def pilots(
    today: str | None = typer.Option(None, "--today", help="the day to judge on, YYYY-MM-DD (default: today)"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Pilot hubs: ready to convert, expiring (14 days), idle, budget used."""
    day = _date(today, "--today", dt.datetime.now(dt.UTC).date())
    _, statuses = _report(file, state_dir, lambda session, fleet: pilot_statuses(session, fleet, today=day))
    records = [
        {
            **dataclasses.asdict(status),
            "active": f"{status.active_non_staff_users}/{status.min_active_users}",
            "budget_used": f"{status.budget_fraction:.0%}" if status.budget_fraction is not None else "",
        }
        for status in statuses
    ]
    columns = [
        ("hub", "hub"),
        ("start", "start"),
        ("end", "end"),
        ("days_left", "days left"),
        ("active", "active non-staff"),
        ("ready_to_convert", "ready to convert"),
        ("expiring", "expiring"),
        ("idle", "idle"),
        ("budget_used", "budget used"),
    ]
    title = f"Pilots on {day}"
    _emit(records, columns, title, as_csv, as_json, [dataclasses.asdict(s) for s in statuses])
    _plot(plot, lambda plots: plots.pilots_figure(statuses), title, records, columns)


def register(app: typer.Typer) -> None:
    """Add the report commands to `app`."""
    app.command("usage")(usage)
    app.command("cost")(cost)
    app.command("mau")(mau)
    app.command("pilots")(pilots)
