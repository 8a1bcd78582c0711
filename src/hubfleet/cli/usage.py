"""Usage and cost reports: `hubfleet usage|cost|mau|pilots`, read straight from the fleet database.

Each prints a rich table, or `--csv` / `--json`, and writes a plot with `--plot FILE.png|FILE.html`. The fleet is
the one last applied in the state directory, or `--file` (its `usage.metering.database_url`, else the state
directory's fleet.sqlite).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path

import typer

from hubfleet.cli.output import STATE_DIR_OPTION, fail
from hubfleet.cli.reports import (
    CSV_OPTION,
    FILE_OPTION,
    JSON_OPTION,
    MONTH_OPTION,
    PLOT_OPTION,
    emit,
    load_fleet,
    parse_date,
    parse_month,
    run_report,
    write_plot,
)
from hubfleet.usage.reports import cost_report, monthly_active_users, pilot_statuses, usage_report
from hubfleet.usage.storage import storage_report

# Columns a narrow terminal leaves out of the tables, first to last (CSV and JSON keep them).
USAGE_OPTIONAL = ("used_memory_gb_hours", "used_cpu_hours", "dask_cpu_hours", "logins", "server_hours", "storage_gb")
COST_OPTIONAL = ("top_user", "plan_fee", "budget_used", "prewarm", "idle")
PILOTS_OPTIONAL = ("start", "budget_used", "idle")


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
    first = parse_date(since, "--since", dt.datetime.now(dt.UTC).date().replace(day=1))
    last = parse_date(until, "--until")
    fleet, rows = run_report(
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
    emit(records, columns, title, as_csv, as_json, optional=USAGE_OPTIONAL)
    write_plot(plot, lambda plots: plots.usage_figure(rows, by), title, records, columns)


def _storage(hub: str | None, file: Path | None, state_dir: Path | None, as_csv: bool, as_json: bool) -> None:
    """`usage --storage`: every home's use and quota, read from this machine (not from the ledger)."""
    fleet, _ = load_fleet(file, state_dir)
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
    emit(records, columns, title, as_csv, as_json, [dataclasses.asdict(row) for row in rows])


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
    first = parse_month(month)
    _, report = run_report(file, state_dir, lambda session, fleet: cost_report(session, fleet, month=first))
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
        emit(records, columns, title, as_csv, as_json, dataclasses.asdict(hub_cost), optional=["storage_gb_months"])
        write_plot(plot, lambda plots: plots.cost_figure(report), title, records, columns)
        return
    records = []
    for hub_cost in report.hubs:
        sums = {
            kind: sum((line.cost for line in hub_cost.of_kind(kind)), 0.0)
            for kind in ("user", "idle", "prewarm", "fee")
        }
        top = hub_cost.of_kind("user")[:1]
        records.append(
            {
                "hub": hub_cost.hub,
                "plan": hub_cost.plan,
                "users": sums["user"],
                "idle": sums["idle"],
                "prewarm": sums["prewarm"],
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
        *([("prewarm", "pre-warmed")] if any(r["prewarm"] for r in records) else []),
        ("fee", "hub fee (cost)"),  # the rate card's fixed cost of running the hub: part of the total
        ("total", f"total {report.currency}"),
        ("budget", "budget"),
        ("budget_used", "budget used"),
        ("plan_fee", "plan pays"),  # what the community pays on its paid plan: income, not in the total
        ("top_user", "top user"),
    ]
    title = f"Cost, {first:%B %Y} ({source}): {report.total:.2f} {report.currency}"
    emit(records, columns, title, as_csv, as_json, dataclasses.asdict(report), optional=COST_OPTIONAL)
    write_plot(plot, lambda plots: plots.cost_figure(report), title, records, columns)


def mau(
    month: str | None = MONTH_OPTION,
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Monthly active users of each hub."""
    first = parse_month(month)
    _, counts = run_report(file, state_dir, lambda session, fleet: monthly_active_users(session, fleet, month=first))
    records = [{"hub": hub, "active_users": count} for hub, count in counts.items()]
    columns = [("hub", "hub"), ("active_users", "active users")]
    title = f"Monthly active users, {first:%B %Y}"
    emit(records, columns, title, as_csv, as_json, counts)
    write_plot(plot, lambda plots: plots.counts_figure(counts, title), title, records, columns)


def pilots(
    today: str | None = typer.Option(None, "--today", help="the day to judge on, YYYY-MM-DD (default: today)"),
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Pilot hubs: ready to convert, expiring (14 days), idle, budget used."""
    day = parse_date(today, "--today", dt.datetime.now(dt.UTC).date())
    _, statuses = run_report(file, state_dir, lambda session, fleet: pilot_statuses(session, fleet, today=day))
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
    emit(records, columns, title, as_csv, as_json, [dataclasses.asdict(s) for s in statuses], optional=PILOTS_OPTIONAL)
    write_plot(plot, lambda plots: plots.pilots_figure(statuses), title, records, columns)


def register(app: typer.Typer) -> None:
    """Add the report commands to `app`."""
    app.command("usage")(usage)
    app.command("cost")(cost)
    app.command("mau")(mau)
    app.command("pilots")(pilots)
