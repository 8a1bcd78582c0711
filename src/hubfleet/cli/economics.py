"""`hubfleet economics`: the sustainability model per hub, plan tier and pilot, with what-if scenarios."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import typer
from rich.markup import escape

from hubfleet.cli.output import STATE_DIR_OPTION, console, fail
from hubfleet.cli.reports import (
    CSV_OPTION,
    FILE_OPTION,
    JSON_OPTION,
    MONEY,
    MONTH_OPTION,
    PLOT_OPTION,
    emit,
    parse_month,
    run_report,
    write_plot,
)

WHAT_IF_OPTION: Any = typer.Option(
    [], "--what-if", help="fee:HUB=AMOUNT, tier:HUB=TIER or add:TIER=N (repeat to combine)"
)


def _hub_record(hub: Any) -> dict[str, Any]:
    per_user = hub.cost_per_active_user
    return {
        **dataclasses.asdict(hub),
        "cost": hub.cost,
        "margin": hub.margin,
        "cost_per_active_user": per_user,
        "idle_share": hub.idle_share,
        "idle": "" if hub.idle_share is None else f"{hub.idle_share:.0%}",
        "per_user": per_user,
    }


def _whole(record: dict[str, Any]) -> dict[str, Any]:
    """Money as whole units (for the tables)."""
    return {key: round(value) if key in MONEY and isinstance(value, float) else value for key, value in record.items()}


def _tier_record(tier: Any) -> dict[str, Any]:
    return {
        **dataclasses.asdict(tier),
        "margin": tier.margin,
        "break_even_fee": tier.break_even_fee,
        "break_even_per_user": tier.break_even_per_user,
    }


def _document(model: Any) -> dict[str, Any]:
    return {
        "month": model.month,
        "currency": model.currency,
        "scenario": model.scenario,
        "hubs": [_hub_record(h) for h in model.hubs],
        "tiers": [_tier_record(t) for t in model.tiers],
        "pilots": [
            {"hub": p.hub, "covering_fee": p.covering_fee, **dataclasses.asdict(p.status)} for p in model.pilots
        ],
        "totals": {"fees": model.fees, "cost": model.cost, "margin": model.margin},
    }


def economics(
    month: str | None = MONTH_OPTION,
    changes: list[str] = WHAT_IF_OPTION,
    file: Path | None = FILE_OPTION,
    state_dir: Path | None = STATE_DIR_OPTION,
    as_csv: bool = CSV_OPTION,
    as_json: bool = JSON_OPTION,
    plot: Path | None = PLOT_OPTION,
) -> None:
    """Per hub: fee, metered cost (as `hubfleet cost`), staff cost, margin, active users, cost per active user, idle
    share; per plan tier: totals and break-even fees; pilots: readiness and the fee that would cover them."""
    from hubfleet.usage.economics import WhatIfError, what_if
    from hubfleet.usage.economics import economics as model_of

    first = parse_month(month)
    _, base = run_report(file, state_dir, lambda session, fleet: model_of(session, fleet, month=first))
    try:
        model = what_if(base, changes) if changes else base
    except WhatIfError as exc:
        raise fail(str(exc)) from None
    currency = model.currency
    records = [_hub_record(h) for h in model.hubs]
    columns = [
        ("hub", "hub"),
        ("tier", "tier"),
        ("fee", "fee"),
        ("metered_cost", "cost"),
        ("staff_cost", "staff"),
        ("margin", "net"),
        ("active_users", "MAU"),
        ("per_user", "/user"),
        ("idle", "idle"),
    ]
    scenario = f" — what if {', '.join(changes)}" if changes else ""
    title = f"Economics, {first:%B %Y} ({currency}){scenario}"
    if as_csv or as_json:
        emit(records, columns, title, as_csv, as_json, _document(model) | {"baseline": _document(base)["totals"]})
    else:  # whole currency units, so that the table fits 80 columns (--csv and --json keep the cents)
        emit([_whole(record) for record in records], columns, title.replace(")", ", whole units)", 1), False, False)
        console.print("cost: metered (as `hubfleet cost`); net = fee - cost - staff; /user: per MAU")
        tiers = [_whole(_tier_record(t)) for t in model.tiers]
        emit(
            tiers,
            [
                ("tier", "tier"),
                ("hubs", "hubs"),
                ("fees", "fees"),
                ("cost", "cost"),
                ("margin", "margin"),
                ("active_users", "MAU"),
                ("break_even_fee", "break-even"),
                ("break_even_per_user", "/user"),
            ],
            f"Plan tiers, {first:%B %Y} ({currency})",
            False,
            False,
        )
        for pilot in model.pilots:
            status = pilot.status
            ready = "ready to convert" if status.ready_to_convert else "not ready"
            console.print(
                f"pilot {escape(pilot.hub)}: {ready} ({status.active_non_staff_users}/{status.min_active_users} "
                f"active), a fee of {pilot.covering_fee:,.2f} {currency}/month would cover it"
            )
        console.print(f"Totals: fees {model.fees:,.2f}, cost {model.cost:,.2f}, margin {model.margin:,.2f} {currency}")
        if changes:
            console.print(f"  today: fees {base.fees:,.2f}, cost {base.cost:,.2f}, margin {base.margin:,.2f}")

    def figure(_plots: Any) -> Any:
        from hubfleet.usage.plots import economics_figure

        return economics_figure(model)

    write_plot(plot, figure, title, records, columns)


def register(app: typer.Typer) -> None:
    app.command("economics")(economics)
