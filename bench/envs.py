"""Environment builds: the pangeo and course templates' environments cold (an empty store and cache) and warm (the
next version, one package more, beside the previous one: what `apply` does after a change), against pip in a plain
virtualenv installing the same pins (what `make setup` does for the default environment, its cache empty, then
warm); and the disk use of 10 environments sharing a base against the same 10 without sharing.

    .venv/bin/python bench/envs.py [--out bench/results/envs.json]

Runs as root (builds run as the build account) with the package index reachable; uses folders of its own under
/opt/hubfleet, removed at the end. hubfleet and pip alternate: for each environment, hubfleet cold, pip cold,
hubfleet warm, pip warm. The disk baseline is measured in the same run: each environment's own size (a separate
virtualenv with its own copy of every file), summed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import subprocess
import time
from pathlib import Path

from hubfleet import envs
from hubfleet.common.environments import EnvStore
from hubfleet.spec import templates
from hubfleet.spec.environments import Environment, python_interpreters
from hubfleet.spec.models import Builds

BUILDS = Builds(account="hubfleet-build")
EXTRA = ["iniconfig", "tabulate", "toolz", "attrs", "idna", "six", "wrapt", "humanize", "tomli-w", "text-unidecode"]
MIB = 2**20


def template_environment(template: str, name: str) -> Environment:
    return Environment.model_validate(templates.get(template).hub["environments"][name])


def timed_build(builder: envs.Builder, key: str, env: Environment) -> tuple[float, dict[str, float]]:
    """Seconds for the whole build, and per step (resolving, installing, bytecode, …)."""
    steps: dict[str, float] = {}
    started = last = time.monotonic()
    current = ""

    def say(step: int, total: int, doing: str) -> None:
        nonlocal last, current
        now = time.monotonic()
        if current:
            steps[current] = round(now - last, 1)
        current, last = doing.split(" ")[0], now
        print(f"  {key}: [{step}/{total}] {doing}", flush=True)

    builder.build(key, env, say)
    steps[current] = round(time.monotonic() - last, 1)
    return round(time.monotonic() - started, 1), steps


def pip_install(pins: list[str], folder: Path, cache: Path) -> float:
    """The baseline: a virtualenv from the same Python, pip installing the same pins (compiling bytecode, as pip
    does by default)."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock = folder.with_suffix(".txt")
    lock.write_text("\n".join(pins) + "\n", encoding="utf-8")
    started = time.monotonic()
    subprocess.run([str(python_interpreters()["3.11"]), "-m", "venv", str(folder)], check=True)
    pip = [str(folder / "bin" / "pip"), "install", "-q", "--no-deps", "--cache-dir", str(cache), "-r", str(lock)]
    subprocess.run(pip, check=True)
    return round(time.monotonic() - started, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "envs.json")
    args = parser.parse_args()
    run = secrets.token_hex(3)
    bench_root = Path(f"/opt/hubfleet/envs-bench-{run}")
    results: dict[str, object] = {"uv": "0.13.8", "baseline": "python -m venv + pip install of the same pins"}
    try:
        for template, name in (("course", "course"), ("pangeo", "pangeo")):
            store = EnvStore(bench_root / name)  # its own store: an empty cache
            builder = envs.Builder(store, BUILDS)
            env = template_environment(template, name)
            results[f"{name}_cold_s"], results[f"{name}_cold_steps"] = timed_build(builder, name, env)
            version = store.history(name).active_version
            assert version is not None
            pins = store.pins(version.build)
            results[f"{name}_packages"] = len(pins)
            results[f"{name}_disk_bytes"] = envs.disk_use([store.prefix(version.build)])
            cache = bench_root / f"pip-cache-{name}"
            results[f"pip_{name}_cold_s"] = pip_install(pins, bench_root / f"pip-{name}", cache)
            changed = env.model_copy(update={"packages": [*env.packages, "tabulate"]})
            results[f"{name}_warm_s"], results[f"{name}_warm_steps"] = timed_build(builder, name, changed)
            new = store.history(name).active_version
            assert new is not None and new.number == 2
            results[f"{name}_second_version_own_bytes"] = envs.disk_use(
                [store.prefix(version.build), store.prefix(new.build)]
            ) - envs.disk_use([store.prefix(version.build)])
            results[f"pip_{name}_warm_s"] = pip_install(store.pins(new.build), bench_root / f"pip-{name}", cache)
            for kind in ("cold", "warm"):
                ratio = results[f"pip_{name}_{kind}_s"] / results[f"{name}_{kind}_s"]  # type: ignore[operator]
                results[f"{name}_{kind}_speedup_over_pip"] = round(ratio, 2)
        # 10 environments on one base (the server side + numpy and pandas), each with a small package of its own.
        store = EnvStore(bench_root / "ten")
        builder = envs.Builder(store, BUILDS)
        prefixes = []
        for index, extra in enumerate(EXTRA):
            key = f"ten-{index}"
            timed_build(builder, key, Environment(packages=["numpy", "pandas", extra]))
            version = store.history(key).active_version
            assert version is not None
            prefixes.append(store.prefix(version.build))
        shared = envs.disk_use(prefixes)
        alone = [envs.disk_use([prefix]) for prefix in prefixes]
        results |= {
            "ten_environments_shared_bytes": shared,
            "ten_environments_unshared_bytes": sum(alone),
            "one_environment_bytes": alone[0],
            "ten_shared_over_one": round(shared / alone[0], 2),
            "unshared_over_shared": round(sum(alone) / shared, 2),
        }
    finally:
        shutil.rmtree(bench_root, ignore_errors=True)
    for key, value in results.items():
        shown = f"{value / MIB:.0f} MiB" if key.endswith("_bytes") and isinstance(value, int) else value
        print(f"{key:34} {shown}")
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
