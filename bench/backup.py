"""Fleet backup and restore of N users x 50 MB homes, against `cp -a` of the same folders (the baseline).

Builds a stopped fleet's state (a fleet file, its state directory, a SQLite fleet database) and N real Unix users
of one hub with homes of $BENCH_HOME_MB (50) MB each (files of 1 MB, 10 small ones), then measures: a first (full)
backup, a second (incremental) backup after one 1 MB file changed in every other home (1 % of 50 MB homes), a
restore into a new state directory onto a machine without the accounts and homes, and `cp -a` of the homes as the
baseline. Writes bench/results/backup.json.

    .venv/bin/python bench/backup.py [--users 100]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import common

from hubfleet import db
from hubfleet.common.state import FleetState
from hubfleet.fleet.backup import SnapshotError, backup_fleet, restore_fleet
from hubfleet.system import accounts, homes

HUB = "nlbench"


class Quiet:
    def phase(self, description: str, total: int) -> None:
        common.log(f"  {description} ({total / 1024**2:.0f} MiB)")

    def advance(self, count: int) -> None:
        pass


def du(path: Path) -> int:
    return int(subprocess.run(["du", "-sb", str(path)], capture_output=True, text=True).stdout.split()[0])


def main() -> int:
    args = common.parse_args(
        None, __doc__, ("--users", "-n", 100, "users of the hub"), Path("bench/results/backup.json"), "run", "data"
    )
    mb = int(os.environ.get("BENCH_HOME_MB", "50"))
    started = common.prepare(lambda: None)
    if started is None:
        return 1

    def body(workdir: Path) -> dict:
        os.chmod(workdir, 0o755)
        home_root, shared = workdir / "home", workdir / "shared"
        home_root.mkdir()
        fleet_file = workdir / "fleet.yaml"
        fleet_file.write_text(
            f"name: nlbench\npaths: {{home_root: {home_root}, shared_root: {shared}}}\nhubs:\n"
            f"  {HUB}:\n    auth: {{type: shared-password, password: benchmark}}\n"
        )
        state = FleetState(workdir / "state").create()
        state.hub(HUB).create()
        state.record_applied(fleet_file, fleet_file.read_text())
        db.open_database(db.default_url(state.root))
        from hubfleet.spec import load

        fleet = load(fleet_file)
        names = [f"{HUB}_u{index:03d}" for index in range(args.users)]
        block = os.urandom(1024**2)
        for name in names:
            account = accounts.ensure_user(name, home_root / name, comment=f"{name} on hub {HUB}")
            for index in range(mb):
                (account.home / f"data{index}.bin").write_bytes(block[index:] + block[:index])
            for index in range(10):
                (account.home / f"note{index}.txt").write_text(f"{name} {index}\n")
            subprocess.run(["chown", "-R", f"{account.uid}:{account.gid}", str(account.home)], check=True)
        os.sync()
        data = du(home_root)
        results: dict = {"users": args.users, "home_mb": mb, "data_bytes": data}
        try:
            baseline = workdir / "cp-baseline"
            clock = time.perf_counter()
            subprocess.run(["cp", "-a", str(home_root), str(baseline)], check=True)
            os.sync()
            results["baseline_cp_seconds"] = time.perf_counter() - clock
            shutil.rmtree(baseline)
            backups = workdir / "backups"
            common.log("full backup")
            full = backup_fleet(fleet, state.root, backups, Quiet())
            results["backup_full_seconds"] = full.seconds
            results["backup_full_bytes"] = du(full.snapshot)
            for name in names[::2]:  # 1 MB in every other home: 1 % of 50 MB homes
                (home_root / name / "data0.bin").write_bytes(os.urandom(1024**2))
            common.log("incremental backup (a file changed in every other home)")
            second = backup_fleet(fleet, state.root, backups, Quiet())
            results["backup_incremental_seconds"] = second.seconds
            results["backup_incremental_new_bytes"] = second.bytes_new
            results["backup_folder_bytes"] = du(backups)
            for name in names:
                accounts.remove_user(name)  # a new machine: no accounts, no homes
            common.log("restore")
            clock = time.perf_counter()
            restore_fleet(backups, workdir / "restored", Quiet())
            results["restore_seconds"] = time.perf_counter() - clock
        finally:
            homes.release_homes(home_root, f"{HUB}_")
            for name in names:
                accounts.remove_user(name)
            accounts.remove_group(accounts.hub_groupname(HUB))
        results["backup_full_to_cp_ratio"] = results["backup_full_seconds"] / results["baseline_cp_seconds"]
        results["restore_to_cp_ratio"] = results["restore_seconds"] / results["baseline_cp_seconds"]
        return results

    status, results = common.run_in_workdir(
        "nlbench-backup-", body, (OSError, SnapshotError, subprocess.CalledProcessError), args.keep_workdir, "data"
    )
    if results is None:
        return status
    common.log(
        f"{results['data_bytes'] / 1024**3:.2f} GiB: cp -a {results['baseline_cp_seconds']:.1f} s, "
        f"full backup {results['backup_full_seconds']:.1f} s ({results['backup_full_to_cp_ratio']:.2f}x), "
        f"incremental {results['backup_incremental_seconds']:.1f} s, restore {results['restore_seconds']:.1f} s"
    )
    common.write_results(
        args.out,
        "backup",
        started,
        {"users": args.users, "home_mb": mb},
        "hubfleet backup/restore of a hub's homes and fleet state, against cp -a of the same homes",
        [
            "full backup",
            "incremental backup after 1 MB changed in every other home",
            "restore onto a machine without the accounts",
        ],
        common.machine_info(),
        results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
