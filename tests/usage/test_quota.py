"""The hard quota: the quota file the collector writes, and the hub's pre-spawn hook that refuses with its message."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from jupyterhub.spawner import SpawnException

from hubfleet.usage.budgets import BudgetPeriod, BudgetStatus, write_quota
from hubfleet.usage.quota import DEFAULT_MESSAGE, QUOTA_FILE, QuotaHook

NOVEMBER = BudgetPeriod("2026-11", dt.date(2026, 11, 1), dt.date(2026, 11, 30), 10.0, hard_quota=True)


def test_over_budget_with_a_hard_quota_refuses_with_the_message(tmp_path: Path) -> None:
    hook = QuotaHook(tmp_path)
    hook(None)  # no quota file: spawns go ahead
    write_quota(tmp_path, BudgetStatus("h", NOVEMBER, 12.5, "USD"))
    with pytest.raises(SpawnException) as refused:
        hook(None)
    assert refused.value.status_code == 403
    assert "used its budget for November 2026 (12.50 of 10.00 USD)" in refused.value.message
    write_quota(tmp_path, BudgetStatus("h", NOVEMBER, 9.0, "USD"))  # a new month, a raised budget: allowed again
    assert not (tmp_path / QUOTA_FILE).exists()
    hook(None)


def test_no_hard_quota_never_refuses(tmp_path: Path) -> None:
    soft = BudgetPeriod("2026-11", NOVEMBER.first, NOVEMBER.last, 10.0, hard_quota=False)
    write_quota(tmp_path, BudgetStatus("h", soft, 50.0, "USD"))
    assert not (tmp_path / QUOTA_FILE).exists()


def test_an_unreadable_quota_file_still_refuses(tmp_path: Path) -> None:
    (tmp_path / QUOTA_FILE).write_text("not json")
    with pytest.raises(SpawnException, match="used its budget") as refused:
        QuotaHook(tmp_path)(None)
    assert refused.value.message == DEFAULT_MESSAGE
