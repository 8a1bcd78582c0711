"""The sustainability model: figures equal to the cost report, the plan fees, the active users and the pilots'
statuses it is built on; staff cost, tiers and break-even fees; what-if scenarios."""

from __future__ import annotations

import calendar
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from hubfleet import db
from hubfleet.usage import ledger
from hubfleet.usage.economics import WhatIfError, economics, what_if
from hubfleet.usage.reports import cost_report, monthly_active_users, pilot_statuses
from tests.helpers import hubfleet
from tests.usage.conftest import make_fleet

GIB = 2**30
DAY = dt.date(2026, 11, 3)
T0 = calendar.timegm(dt.datetime(2026, 11, 3, 10).timetuple())
AUTH = "auth: {type: shared-password, password: secret-password, admins: [boss]}"
HUBS = f"""
big:
  {AUTH}
  plan: {{type: paid, monthly_fee: 400, tier: institution}}
small:
  {AUTH}
  plan: {{type: paid, monthly_fee: 50, tier: college}}
smaller:
  {AUTH}
  plan: {{type: paid, monthly_fee: 30, tier: college}}
trial:
  {AUTH}
  plan: {{type: pilot, start: 2026-10-01, end: 2026-12-31, conversion: {{min_active_users: 2}}}}
bare:
  {AUTH}
"""
TOP = """usage: {rates: {cpu_hour: 2, memory_gb_hour: 0.5, storage_gb_month: 1, hub_monthly_fee: 3}}
organisation:
  staff: {hourly_rate: 60, hours_per_hub: 1, plan_hours: {pilot: 2}, hub_hours: {big: 6}}"""


def record(sessions: sessionmaker) -> None:
    with sessions.begin() as session:
        readings = []
        for hub, users, cores in (("big", 6, 1.5), ("small", 2, 0.5), ("trial", 3, 1.0), ("smaller", 1, 0.2)):
            for u in range(users):
                readings += [
                    ledger.Reading(hub, f"u{u}", "server", T0 + 60 * i, 60, 60 * cores, 1.0, GIB, GIB)
                    for i in range(60)
                ]
                ledger.record_activity(session, hub, f"u{u}", dt.datetime(2026, 11, 3, 11, tzinfo=dt.UTC))
        ledger.record_samples(session, readings)
        ledger.rollup(session, T0)
        for i in range(60):
            ledger.record_coverage(session, T0 + 60 * i, 60, 16, 64 * GIB)


def test_the_model_equals_the_cost_report_the_fees_and_the_active_users(sessions: sessionmaker) -> None:
    fleet = make_fleet(HUBS, TOP)
    record(sessions)
    with sessions() as session:
        model = economics(session, fleet, month=DAY, today=DAY)
        report = cost_report(session, fleet, month=DAY)
        active = monthly_active_users(session, fleet, month=DAY)
        pilots = pilot_statuses(session, fleet, today=DAY)
    assert [h.hub for h in model.hubs] == ["big", "small", "smaller", "trial", "bare"]
    fees = {"big": 400, "small": 50, "smaller": 30, "trial": 0, "bare": 0}
    hours = {"big": 6, "small": 1, "smaller": 1, "trial": 2, "bare": 1}
    for hub in model.hubs:
        assert hub.metered_cost == pytest.approx(report.hub(hub.hub).total)
        assert hub.fee == fees[hub.hub]
        assert hub.staff_cost == pytest.approx(60 * hours[hub.hub])
        assert hub.cost == pytest.approx(hub.metered_cost + hub.staff_cost)
        assert hub.margin == pytest.approx(hub.fee - hub.cost)
        assert hub.active_users == active[hub.hub]
        idle = report.hub(hub.hub).of_kind("idle")[0].cost
        assert hub.idle_share == pytest.approx(idle / hub.metered_cost)
    assert model.hub("big").cost_per_active_user == pytest.approx(model.hub("big").cost / 6)
    assert model.hub("bare").cost_per_active_user is None
    tiers = {t.tier: t for t in model.tiers}
    assert list(tiers) == ["institution", "college", "pilot", "no plan"]
    college = tiers["college"]
    assert college.hubs == 2 and college.fees == 80 and college.active_users == 3
    assert college.cost == pytest.approx(model.hub("small").cost + model.hub("smaller").cost)
    assert college.break_even_fee == pytest.approx(college.cost / 2)
    assert college.break_even_per_user == pytest.approx(college.cost / 3)
    assert model.fees == 480 and model.cost == pytest.approx(sum(h.cost for h in model.hubs))
    (pilot,) = model.pilots
    assert pilot.status == pilots[0] and pilot.status.ready_to_convert
    assert pilot.covering_fee == pytest.approx(model.hub("trial").cost)


def test_what_if_changes_fees_tiers_and_adds_hubs(sessions: sessionmaker) -> None:
    fleet = make_fleet(HUBS, TOP)
    record(sessions)
    with sessions() as session:
        model = economics(session, fleet, month=DAY, today=DAY)
    scenario = what_if(model, ["fee:small=90", "tier:trial=college", "add:institution=2"])
    assert scenario.hub("small").fee == 90
    assert scenario.hub("trial").tier == "college" and scenario.hub("trial").fee == pytest.approx(60), (
        "after small's new fee"
    )
    new = [h for h in scenario.hubs if h.hub.startswith("+institution-")]
    assert len(new) == 2 and all(h.cost == pytest.approx(model.hub("big").cost) for h in new)
    assert scenario.fees == pytest.approx(model.fees + 40 + 60 + 800)
    assert scenario.cost == pytest.approx(model.cost + 2 * model.hub("big").cost)
    assert model.fees == 480, "the model itself is unchanged"
    for bad, message in (("fee:nope=1", "no hub 'nope'"), ("add:gold=1", "no hub has tier"), ("x", "cannot read")):
        with pytest.raises(WhatIfError, match=message):
            what_if(model, [bad])


def test_hubfleet_economics_equals_hubfleet_cost_and_fits_80_columns(tmp_path: Path) -> None:
    fleet_file = tmp_path / "fleet.yaml"
    indented = "\n".join("  " + line for line in HUBS.strip().splitlines())
    fleet_file.write_text(f"name: orgecon\n{TOP}\nhubs:\n{indented}\n")
    state = tmp_path / "state"
    state.mkdir()
    record(db.open_database(db.default_url(state)))
    where = ("--file", str(fleet_file), "--state-dir", str(state), "--month", "2026-11")
    model = json.loads(hubfleet("economics", *where, "--json").stdout)
    cost = json.loads(hubfleet("cost", *where, "--json").stdout)
    for hub in model["hubs"]:
        report = next(h for h in cost["hubs"] if h["hub"] == hub["hub"])
        assert hub["metered_cost"] == pytest.approx(report["total"])
        assert hub["fee"] == (report["plan_fee"] or 0)
    scenario = json.loads(hubfleet("economics", *where, "--json", "--what-if", "add:college=2").stdout)
    assert scenario["totals"]["fees"] == pytest.approx(model["totals"]["fees"] + 80)
    assert scenario["baseline"] == model["totals"]
    table = subprocess.run(
        [sys.executable, "-m", "hubfleet", "economics", *where, "--what-if", "fee:small=90"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "80"},
        timeout=120,
    )
    assert table.returncode == 0, table.stderr
    assert max(len(line) for line in table.stdout.splitlines()) <= 80, table.stdout
    assert "Plan tiers" in table.stdout and "pilot trial" in table.stdout and "today: fees 480.00" in table.stdout
    bad = hubfleet("economics", *where, "--what-if", "fee:nope=3", check=False)
    assert bad.returncode == 1 and "no hub 'nope'" in bad.stderr
    plot = tmp_path / "economics.html"
    hubfleet("economics", *where, "--plot", str(plot))
    assert "<img" in plot.read_text()
