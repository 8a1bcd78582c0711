"""The scratch sweeper on a temporary tree: age first, then size, per user, never following a symlink.

Pure and fast: files with set modification times (os.utime), no processes.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import pytest

from hubfleet.fleet.scratch import ScratchSweeper, scratch_roots, sweep_fleet, sweep_scratch
from hubfleet.spec import parse
from tests.helpers import await_until

NOW = 2_000_000_000.0
DAY = 86400
K = 1024
BLOCK = 64 * K  # file sizes are whole blocks, so that disk usage equals the size written


def make(path: Path, age: float, size: int = BLOCK) -> Path:
    """A file of `size` bytes last modified `age` seconds before NOW."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    os.utime(path, (NOW - age, NOW - age))
    return path


def age_dir(path: Path, age: float) -> Path:
    os.utime(path, (NOW - age, NOW - age))
    return path


def files_under(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    root = tmp_path / "scratch"
    root.mkdir()
    return root


def test_files_older_than_max_age_are_removed(scratch: Path) -> None:
    old = make(scratch / "h_alice" / "old.nc", age=8 * DAY)
    fresh = make(scratch / "h_alice" / "fresh.nc", age=1 * DAY)
    nested_old = make(scratch / "h_alice" / "run" / "step1.zarr", age=30 * DAY)
    removed = sweep_scratch(scratch, size=0, max_age=7 * DAY, now=NOW)
    assert not old.exists() and not nested_old.exists()
    assert fresh.exists()
    assert set(removed) == {old, nested_old, scratch / "h_alice" / "run"}  # run/ was emptied: it goes too
    assert (scratch / "h_alice").is_dir()


def test_over_size_the_users_oldest_files_go_first(scratch: Path) -> None:
    user = scratch / "h_alice"
    files = [make(user / f"f{i}", age=(10 - i) * 3600) for i in range(4)]  # f0 oldest, f3 newest
    removed = sweep_scratch(scratch, size=int(2.5 * BLOCK), max_age=7 * DAY, now=NOW)
    assert removed == [files[0], files[1]]
    assert [f.exists() for f in files] == [False, False, True, True]


def test_age_then_size(scratch: Path) -> None:
    user = scratch / "h_alice"
    ancient = make(user / "ancient", age=10 * DAY)
    older = make(user / "a" / "older", age=3 * DAY)
    newer = make(user / "b" / "newer", age=2 * DAY)
    newest = make(user / "b" / "newest", age=1 * DAY)
    removed = sweep_scratch(scratch, size=2 * BLOCK, max_age=7 * DAY, now=NOW)
    assert removed == [ancient, older, user / "a"]
    assert newer.exists() and newest.exists()


def test_size_is_per_user(scratch: Path) -> None:
    alice = [make(scratch / "h_alice" / f"f{i}", age=(10 - i) * 3600) for i in range(3)]
    bob = [make(scratch / "h_bob" / f"f{i}", age=(20 - i) * 3600) for i in range(2)]  # older than alice's
    removed = sweep_scratch(scratch, size=2 * BLOCK, max_age=0, now=NOW)
    assert removed == [alice[0]]
    assert all(f.exists() for f in bob)


def test_zero_means_no_limit(scratch: Path) -> None:
    make(scratch / "h_alice" / "old", age=365 * DAY, size=4 * BLOCK)
    assert sweep_scratch(scratch, size=0, max_age=0, now=NOW) == []
    assert files_under(scratch) == {"h_alice", "h_alice/old"}


def test_a_symlink_pointing_outside_is_never_followed(tmp_path: Path, scratch: Path) -> None:
    outside = tmp_path / "outside"
    precious_dir = outside / "data"
    precious = make(precious_dir / "precious", age=100 * DAY, size=8 * BLOCK)
    big = make(outside / "big", age=100 * DAY, size=16 * BLOCK)
    age_dir(precious_dir, 100 * DAY)
    user = scratch / "h_mallory"
    user.mkdir()
    to_dir, to_file, fresh_link = user / "to-dir", user / "to-file", user / "fresh-link"
    to_dir.symlink_to(precious_dir)
    to_file.symlink_to(precious)
    fresh_link.symlink_to(big)
    for link, age in ((to_dir, 30 * DAY), (to_file, 30 * DAY), (fresh_link, DAY)):
        os.utime(link, (NOW - age, NOW - age), follow_symlinks=False)
    mine = make(user / "mine", age=1 * DAY)
    # Old links go as links; a link's target is never counted, entered or removed, whatever the size limit.
    removed = sweep_scratch(scratch, size=2 * BLOCK, max_age=7 * DAY, now=NOW)
    assert set(removed) == {to_dir, to_file}
    assert precious.exists() and big.exists() and precious_dir.is_dir()
    assert fresh_link.is_symlink() and mine.exists()
    assert precious.stat().st_size == 8 * BLOCK


def test_a_symlink_in_place_of_a_users_folder_is_not_swept(tmp_path: Path, scratch: Path) -> None:
    outside = tmp_path / "elsewhere"
    victim = make(outside / "victim", age=100 * DAY)
    (scratch / "h_mallory").symlink_to(outside)
    assert sweep_scratch(scratch, size=1, max_age=DAY, now=NOW) == []
    assert victim.exists()


def test_a_symlinked_directory_deep_down_is_not_entered(tmp_path: Path, scratch: Path) -> None:
    outside = tmp_path / "outside"
    victim = make(outside / "victim", age=100 * DAY)
    deep = scratch / "h_alice" / "a" / "b"
    deep.mkdir(parents=True)
    (deep / "c").symlink_to(outside, target_is_directory=True)
    sweep_scratch(scratch, size=1, max_age=DAY, now=NOW)
    assert victim.exists()


def test_empty_directories(scratch: Path) -> None:
    user = scratch / "h_alice"
    make(user / "emptied" / "deeper" / "old", age=10 * DAY)
    keep = make(user / "kept" / "fresh", age=DAY)
    made_today = user / "made-today"
    made_today.mkdir()
    age_dir(made_today, 0)
    untouched = user / "untouched"
    untouched.mkdir()
    age_dir(untouched, 10 * DAY)
    removed = sweep_scratch(scratch, size=0, max_age=7 * DAY, now=NOW)
    assert set(removed) == {
        user / "emptied" / "deeper" / "old",
        user / "emptied" / "deeper",
        user / "emptied",
        untouched,
    }
    assert keep.exists() and made_today.is_dir()
    # The user's own folder stays, even once emptied and old.
    make(user / "kept" / "fresh", age=30 * DAY)
    sweep_scratch(scratch, size=0, max_age=7 * DAY, now=NOW)
    age_dir(user, 30 * DAY)
    sweep_scratch(scratch, size=0, max_age=7 * DAY, now=NOW)
    assert user.is_dir() and files_under(scratch) == {"h_alice", "h_alice/made-today"}


def test_stray_files_and_a_missing_root(tmp_path: Path, scratch: Path) -> None:
    stray = make(scratch / "not-a-folder", age=100 * DAY)
    assert sweep_scratch(scratch, size=1, max_age=DAY, now=NOW) == []
    assert stray.exists()
    assert sweep_scratch(tmp_path / "missing", size=1, max_age=DAY, now=NOW) == []


FLEET = """\
name: t
paths: {{shared_root: {root}}}
hubs:
  withscratch:
    auth: {{type: native}}
    storage: {{scratch: {{size: 1G, max_age: 1d}}}}
  without:
    auth: {{type: native}}
"""


def test_the_fleet_sweep_covers_hubs_with_scratch_and_logs_what_it_removed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    fleet = parse(FLEET.format(root=tmp_path / "srv"))
    assert scratch_roots(fleet) == {"withscratch": tmp_path / "srv" / "withscratch" / "scratch"}
    old = make(tmp_path / "srv" / "withscratch" / "scratch" / "withscratch_ann" / "old", age=2 * DAY)
    untouched = make(tmp_path / "srv" / "without" / "scratch" / "without_ann" / "old", age=2 * DAY)
    with caplog.at_level(logging.INFO, logger="hubfleet.scratch"):
        assert sweep_fleet(fleet, now=NOW) == {"withscratch": 1}
    assert not old.exists() and untouched.exists()
    assert f"removed {old}" in caplog.text


def test_the_sweeper_runs_in_the_background_until_stopped(tmp_path: Path) -> None:
    fleet = parse(FLEET.format(root=tmp_path / "srv"))
    old = tmp_path / "srv" / "withscratch" / "scratch" / "withscratch_ann" / "old"

    async def scenario() -> None:
        sweeper = ScratchSweeper(lambda: fleet, every=0.05)
        task = asyncio.create_task(sweeper.run())
        await asyncio.sleep(0.2)
        make(old, age=NOW - 1000)  # modified in 1970 + 1000 s: long ago
        await await_until(lambda: asyncio.sleep(0, not old.exists()), 5, "the sweeper to remove the old file")
        sweeper.stop()
        await asyncio.wait_for(task, timeout=5)

    asyncio.run(scenario())
    assert not old.exists()
