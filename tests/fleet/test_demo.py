"""The demo fleet file (examples/fleet.yaml) runs, and `hubfleet check` passes on every one of its hubs."""

from __future__ import annotations

import json
import re
import secrets
import textwrap
from pathlib import Path

from hubfleet.spec import load
from tests.helpers import running_fleet

DEMO = Path(__file__).parents[2] / "examples" / "fleet.yaml"
STEPS = ["login", "start-server", "start-kernel", "run-code", "stop-kernel", "stop-server"]
DASK_STEPS = [*STEPS[:4], "dask", *STEPS[4:]]
"""The check's steps on hubs with Dask (the demo's research hub has it from the pangeo template)."""


def demo_sections(suffix: str) -> tuple[str, str, list[str]]:
    """The demo's defaults and hubs, each hub renamed `<name>-<suffix>` so that a real demo's accounts are safe."""
    names = list(load(DEMO).hubs)
    text = DEMO.read_text()
    defaults = text.split("\ndefaults:\n", 1)[1].split("\nhubs:\n", 1)[0]
    hubs = text.split("\nhubs:\n", 1)[1]
    renamed = [f"{name[:14]}-{suffix}" for name in names]
    for name, new in zip(names, renamed, strict=True):
        hubs = re.sub(rf"^  {name}:$", f"  {new}:", hubs, flags=re.M)
    return textwrap.dedent(defaults), textwrap.dedent(hubs), renamed


def test_check_passes_on_every_demo_hub(tmp_path: Path) -> None:
    defaults, hubs, names = demo_sections(secrets.token_hex(2))
    demo = load(DEMO)
    with_dask = {new for old, new in zip(demo.hubs, names, strict=True) if demo.hubs[old].dask is not None}
    with running_fleet(tmp_path, hubs, names, "", defaults=defaults) as fleet:
        result = fleet.cli("check", "--json", check=False, timeout=600)
        report = json.loads(result.stdout)
        failures = {h["hub"]: [s for s in h["steps"] if not s["ok"]] for h in report["hubs"] if not h["ok"]}
        assert result.returncode == 0 and report["ok"], failures
        assert sorted(h["hub"] for h in report["hubs"]) == sorted(names)
        for hub in report["hubs"]:
            assert [s["name"] for s in hub["steps"]] == (DASK_STEPS if hub["hub"] in with_dask else STEPS)
