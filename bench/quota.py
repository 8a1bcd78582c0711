"""Home quotas: what the loop-mounted XFS image costs on file I/O, against a plain folder on the same disk.

Baseline ("plain"): a folder on the disk the images live on. Measured ("quota"): a home with a quota image, made
by `hubfleet.system.homes.ensure_home` as the spawner makes it; and ("quota_buffered") the same with direct I/O
turned off on its loop device, as homes were mounted before. Every measurement starts with the page cache
dropped (`sync; echo 3 > /proc/sys/vm/drop_caches`) and counts only what is on the disk when it ends, so neither
system is flattered by memory: a loop device without direct I/O keeps a second copy of the data in the page cache
of its image file, and buffered writes that are not synced measure memory, not disks. The two systems alternate
run by run (each run starts with the next one).

Workloads, each `--runs` times per system:

* `direct_write`: `--size` MiB in 1 MiB O_DIRECT writes, then fsync (bypasses the page cache in the home);
* `synced_write`: `--size` MiB in 1 MiB buffered writes, then fsync (what a program saving a large file does);
* `small_files`: 500 files of 4 KiB, each written and fsync'd (what JupyterLab's atomic saves do);
* `cold_read`: the `direct_write` file read back after the caches were dropped.

Throughput ratios against plain (1.0 = no cost; 0.8 = 20 % slower) and the overheads in percent are printed and
written to bench/results/quota.json.

    .venv/bin/python bench/quota.py [--runs 15]         # BENCH_QUOTA_MIB=512: size of the large file
"""

from __future__ import annotations

import mmap
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import common

from hubfleet.system import accounts, homes

MIB = 1024**2
SMALL_FILES = 500
SMALL_SIZE = 4096
DROP_CACHES = Path("/proc/sys/vm/drop_caches")

WORKLOADS = ("direct_write", "synced_write", "small_files", "cold_read")
SYSTEMS = ("plain", "quota", "quota_buffered")
"""A plain folder; a home as hubfleet makes it (direct I/O on its loop device); the same with a buffered loop device
(how homes were mounted before direct I/O: kept for the comparison)."""
UNITS = {"direct_write": "MiB/s", "synced_write": "MiB/s", "small_files": "files/s", "cold_read": "MiB/s"}


def drop_caches() -> None:
    """Write every dirty page out and forget the page cache (both the home's and its image file's)."""
    os.sync()
    DROP_CACHES.write_text("3\n")


def buffered(home: Path) -> None:
    """Turn direct I/O off on the loop device under `home`."""
    device = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(home)], capture_output=True, text=True, check=True)
    subprocess.run(["losetup", "--direct-io=off", device.stdout.strip()], check=True)


def _aligned_block() -> mmap.mmap:
    block = mmap.mmap(-1, MIB)  # page-aligned, as O_DIRECT needs
    block.write(os.urandom(MIB))
    return block


def direct_write(folder: Path, size: int) -> float:
    block = _aligned_block()
    started = time.perf_counter()
    fd = os.open(folder / "big", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o600)
    try:
        for _ in range(size):
            os.write(fd, block)
        os.fsync(fd)
    finally:
        os.close(fd)
    return size / (time.perf_counter() - started)


def synced_write(folder: Path, size: int) -> float:
    block = os.urandom(MIB)
    started = time.perf_counter()
    with open(folder / "synced", "wb") as out:
        for _ in range(size):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    (folder / "synced").unlink()
    return size / seconds


def small_files(folder: Path, size: int) -> float:
    target = folder / "small"
    target.mkdir()
    data = os.urandom(SMALL_SIZE)
    started = time.perf_counter()
    for index in range(SMALL_FILES):
        fd = os.open(target / f"f{index}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
    directory = os.open(target, os.O_RDONLY)
    os.fsync(directory)
    os.close(directory)
    seconds = time.perf_counter() - started
    for index in range(SMALL_FILES):
        (target / f"f{index}").unlink()
    target.rmdir()
    return SMALL_FILES / seconds


def cold_read(folder: Path, size: int) -> float:
    started = time.perf_counter()
    with open(folder / "big", "rb", buffering=0) as source:
        read = 0
        while chunk := source.read(MIB):
            read += len(chunk)
    seconds = time.perf_counter() - started
    (folder / "big").unlink()
    return read / MIB / seconds


MEASURE: dict[str, Callable[[Path, int], float]] = {
    "direct_write": direct_write,
    "synced_write": synced_write,
    "small_files": small_files,
    "cold_read": cold_read,
}


def main() -> int:
    args = common.parse_args(
        None, __doc__, ("--runs", "-n", 15, "runs of each system"), Path("bench/results/quota.json"), "run", "homes"
    )
    size = int(os.environ.get("BENCH_QUOTA_MIB", "512"))
    started = common.prepare(lambda: None)
    if started is None:
        return 1
    if os.geteuid() != 0:
        common.log("error: run as root (quota images are mounted, and the page cache is dropped between runs)")
        return 1

    def body(workdir: Path) -> dict:
        os.chmod(workdir, 0o755)
        plain = workdir / "plain"
        plain.mkdir()
        made = [accounts.ensure_user(name, workdir / name) for name in ("nlbench_quota", "nlbench_qbuf")]
        results: dict[str, list[float]] = {f"{system}_{w}": [] for w in WORKLOADS for system in SYSTEMS}
        try:
            for account in made:
                homes.ensure_home(account, max(3 * size * MIB, homes.MIN_QUOTA))
            buffered(made[1].home)
            folders = dict(zip(SYSTEMS, [plain, made[0].home, made[1].home], strict=True))
            for run in range(args.runs):
                shift = run % len(SYSTEMS)
                for system in SYSTEMS[shift:] + SYSTEMS[:shift]:
                    for workload in WORKLOADS:
                        drop_caches()
                        results[f"{system}_{workload}"].append(MEASURE[workload](folders[system], size))
                common.log(f"run {run + 1}: " + ", ".join(f"{key} {values[-1]:.0f}" for key, values in results.items()))
        finally:
            for account in made:
                homes.release_home(account.home)
                accounts.remove_user(account.name)
        figures: dict[str, object] = {key: common.summary(values) for key, values in results.items()}
        for system in SYSTEMS[1:]:
            for workload in WORKLOADS:
                ratio = statistics.median(results[f"{system}_{workload}"]) / statistics.median(
                    results[f"plain_{workload}"]
                )
                figures[f"{workload}_ratio_{system}_to_plain"] = round(ratio, 3)
                figures[f"{workload}_overhead_percent_{system}"] = round((1 / ratio - 1) * 100, 1)
        return figures

    status, results = common.run_in_workdir(
        "nlbench-quota-", body, (OSError, homes.QuotaError), args.keep_workdir, "homes"
    )
    if results is None:
        return status
    header = f"{'workload':<14}{'unit':<8}" + "".join(f"{system:>15}" for system in SYSTEMS)
    common.log_table_header("Medians; in brackets: against plain (1.00 = no cost, 0.80 = 20 % slower)", header)
    for workload in WORKLOADS:
        cells = [f"{results[f'plain_{workload}']['median']:>15.0f}"]
        for system in SYSTEMS[1:]:
            ratio = results[f"{workload}_ratio_{system}_to_plain"]
            cells.append(f"{results[f'{system}_{workload}']['median']:>8.0f} ({ratio:.2f})")
        common.log(f"{workload:<14}{UNITS[workload]:<8}" + "".join(cells))
    common.write_results(
        args.out,
        "quota",
        started,
        {"runs": args.runs, "size_mib": size, "small_files": SMALL_FILES, "small_file_bytes": SMALL_SIZE},
        "file I/O in a home with a quota image (loop-mounted XFS, as the spawner makes it; and with a buffered loop "
        "device, as before) against a plain folder on the same disk; throughput, higher is better; ratio = X / plain",
        [
            "page cache dropped (sync; drop_caches) before every measurement; every write is fsync'd",
            f"direct_write: size MiB in 1 MiB O_DIRECT writes, fsync; synced_write: the same buffered, fsync; "
            f"small_files: {SMALL_FILES} x {SMALL_SIZE} B, each fsync'd; cold_read: the direct_write file, cold",
            "systems alternate run by run; medians",
        ],
        common.machine_info(),
        results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
