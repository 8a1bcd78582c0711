"""Environment builds: the pangeo and course templates' environments cold (empty cache) and warm (cache kept,
builds removed), and the disk use of 10 environments sharing a base against the same 10 without sharing.

    .venv/bin/python bench/envs.py [--out bench/results/envs.json]

Runs as root (builds run as the build account) with PyPI reachable; uses a store of its own under /opt/hubfleet,
removed at the end. The baseline for disk use is measured in the same run: each environment's own size (what it
would take as a separate virtualenv with its own copy of every file), summed.
"""

from __future__ import annotations

import argparse
import json
import secrets
import shutil
import time
from pathlib import Path

from hubfleet import envs
from hubfleet.common.environments import EnvStore
from hubfleet.spec import templates
from hubfleet.spec.environments import Environment
from hubfleet.spec.models import Builds

BUILDS = Builds(account="hubfleet-build")
EXTRA = ["iniconfig", "tabulate", "toolz", "attrs", "idna", "six", "wrapt", "humanize", "tomli-w", "text-unidecode"]
MIB = 2**20


def template_environment(template: str, name: str) -> Environment:
    return Environment.model_validate(templates.get(template).hub["environments"][name])


def timed_build(builder: envs.Builder, key: str, env: Environment) -> float:
    started = time.monotonic()
    builder.build(key, env, lambda step, steps, doing: print(f"  {key}: [{step}/{steps}] {doing}", flush=True))
    return time.monotonic() - started


def forget_builds(store: EnvStore) -> None:
    """Remove every build and history, keep the package cache (what a warm build starts from)."""
    shutil.rmtree(store.builds)
    shutil.rmtree(store.names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "envs.json")
    args = parser.parse_args()
    store = EnvStore(Path(f"/opt/hubfleet/envs-bench-{secrets.token_hex(3)}"))
    builder = envs.Builder(store, BUILDS)
    results: dict[str, float | int | str] = {}
    try:
        for template, name in (("course", "course"), ("pangeo", "pangeo")):
            env = template_environment(template, name)
            results[f"{name}_cold_s"] = round(timed_build(builder, name, env), 1)
            results[f"{name}_packages"] = store.history(name).active_version.packages  # type: ignore[union-attr]
            results[f"{name}_disk_bytes"] = envs.disk_use([store.builds])
            forget_builds(store)
            results[f"{name}_warm_s"] = round(timed_build(builder, name, env), 1)
            forget_builds(store)
        # 10 environments on one base (the server side + numpy and pandas), each with a small package of its own.
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
            "uv": "0.13.8",
        }
    finally:
        shutil.rmtree(store.root, ignore_errors=True)
    for key, value in results.items():
        shown = f"{value / MIB:.0f} MiB" if key.endswith("_bytes") and isinstance(value, int) else value
        print(f"{key:34} {shown}")
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
