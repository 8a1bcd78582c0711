"""Home quotas: what the loop-mounted XFS image costs on file writes, against a plain folder on the same disk.

Each run writes `--size` MiB in 1 MiB blocks and fsyncs (one large file), then 2,000 small files of 4 KiB (a
checkout, a conda environment): once into a plain folder (the baseline), once into a home with a quota image. The
two alternate run by run. Writes bench/results/quota.json.

    .venv/bin/python bench/quota.py [--runs 5] [--size 256]
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import common

from hubfleet.system import accounts, homes

MIB = 1024**2


def write_big(folder: Path, size: int) -> float:
    block = os.urandom(MIB)
    started = time.perf_counter()
    with open(folder / "big", "wb") as out:
        for _ in range(size):
            out.write(block)
        out.flush()
        os.fsync(out.fileno())
    seconds = time.perf_counter() - started
    (folder / "big").unlink()
    return size / seconds


def write_small(folder: Path, count: int = 2000) -> float:
    data = os.urandom(4096)
    target = folder / "small"
    target.mkdir()
    started = time.perf_counter()
    for index in range(count):
        (target / f"f{index}").write_bytes(data)
    os.sync()
    seconds = time.perf_counter() - started
    shutil.rmtree(target)
    return count / seconds


def main() -> int:
    args = common.parse_args(
        None, __doc__, ("--runs", "-n", 5, "runs of each system"), Path("bench/results/quota.json"), "run", "homes"
    )
    size = int(os.environ.get("BENCH_QUOTA_MIB", "256"))
    started = common.prepare(lambda: None)
    if started is None:
        return 1

    def body(workdir: Path) -> dict:
        os.chmod(workdir, 0o755)
        plain = workdir / "plain"
        plain.mkdir()
        account = accounts.ensure_user("nlbench_quota", workdir / "nlbench_quota")
        try:
            homes.ensure_home(account, 2 * size * MIB)
            results: dict[str, list[float]] = {
                "plain_mib_s": [],
                "quota_mib_s": [],
                "plain_files_s": [],
                "quota_files_s": [],
            }
            for run in range(args.runs):
                order = [("plain", plain), ("quota", account.home)]
                for name, folder in order if run % 2 == 0 else reversed(order):
                    results[f"{name}_mib_s"].append(write_big(folder, size))
                    results[f"{name}_files_s"].append(write_small(folder))
                common.log(f"run {run + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in results.items()))
        finally:
            homes.release_home(account.home)
            accounts.remove_user(account.name)
        medians = {key: statistics.median(values) for key, values in results.items()}
        return {
            **{key: common.summary(values) for key, values in results.items()},
            "write_ratio_quota_to_plain": medians["quota_mib_s"] / medians["plain_mib_s"],
            "small_files_ratio_quota_to_plain": medians["quota_files_s"] / medians["plain_files_s"],
        }

    status, results = common.run_in_workdir(
        "nlbench-quota-", body, (OSError, homes.QuotaError), args.keep_workdir, "homes"
    )
    if results is None:
        return status
    common.log(
        f"quota/plain: large writes {results['write_ratio_quota_to_plain']:.2f}x, "
        f"small files {results['small_files_ratio_quota_to_plain']:.2f}x"
    )
    common.write_results(
        args.out,
        "quota",
        started,
        {"runs": args.runs, "size_mib": size},
        "write throughput into a home with a quota image (loop-mounted XFS) against a plain folder on the same disk",
        ["large file: size MiB in 1 MiB writes, fsync", "2,000 files of 4 KiB, then sync", "alternating order"],
        common.machine_info(),
        results,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
