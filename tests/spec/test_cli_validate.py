"""The real command line on fleet files: `validate`, `schema`, and `up`/`apply` refusing an invalid file.

Each test runs `python -m hubfleet …` in a subprocess; none starts a fleet.
"""

from __future__ import annotations

import json
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from hubfleet.spec import SpecError, load
from tests import helpers

ROOT = Path(__file__).resolve().parents[2]

BAD = """\
name: t
front_door:
  prot: 8000
hubs:
  a:
    auth:
      type: shared-password
      password: short
    profils: []
  B:
    auth: {type: native}
  c:
    auth: {type: native}
    profiles:
      - name: p
        memory: lots
        groups: [staff]
"""


def hubfleet(*args: str, cwd: Path, state_env: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "HUBFLEET_STATE_DIR"}
    if state_env is not None:
        env["HUBFLEET_STATE_DIR"] = str(state_env)
    # 80 columns: the width users get, whatever the terminal running the tests
    return helpers.hubfleet(*args, check=False, timeout=60, cwd=cwd, env=env, columns=80)


def flat(text: str) -> str:
    """Output with line wrapping undone (rich wraps long lines at the console width)."""
    return " ".join(text.split())


@dataclass
class Runs:
    """Every command of this file, run once, side by side (each takes about a second to start)."""

    folder: Path
    bad_file: Path
    results: dict[str, subprocess.CompletedProcess[str]]

    def __getitem__(self, name: str) -> subprocess.CompletedProcess[str]:
        return self.results[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    folder = tmp_path_factory.mktemp("cli")
    bad_file = folder / "bad.yaml"
    bad_file.write_text(BAD, encoding="utf-8")
    commands = {
        "validate-bad": (["validate", "bad.yaml"], folder, None),
        "validate-demo": (["validate", "examples/fleet.yaml"], ROOT, None),
        "schema": (["schema"], ROOT, None),
        "up": (["up", str(bad_file), "--state-dir", str(folder / "tmp" / "state")], folder, None),
        "up-detach": (["up", str(bad_file), "--detach"], folder, folder / "env-state"),
        "apply": (["apply", "bad.yaml", "--state-dir", str(folder / "apply-state")], folder, None),
    }
    with ThreadPoolExecutor(len(commands)) as pool:
        futures = {
            name: pool.submit(hubfleet, *args, cwd=cwd, state_env=env) for name, (args, cwd, env) in commands.items()
        }
        results = {name: future.result() for name, future in futures.items()}
    return Runs(folder, bad_file, results)


def test_validate_reports_every_problem_with_its_location(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(runs.folder)
    with pytest.raises(SpecError) as info:
        load("bad.yaml")
    expected = info.value.problems
    assert len(expected) == 5

    result = runs["validate-bad"]
    assert result.returncode == 1, result.stderr
    assert result.stdout == ""
    out = flat(result.stderr)
    assert out.startswith("5 problems in the fleet file:")
    for problem in expected:
        assert f"{problem.file}:{problem.line}:{problem.column}: {problem.path}: {flat(problem.message)}" in out
        if problem.hint:
            assert f"hint: {flat(problem.hint)}" in out
    assert out.endswith("Nothing was changed.")
    # Spot checks, so that this test does not only agree with the loader.
    for text in (
        "bad.yaml:3:3: front_door.prot: unknown key 'prot' hint: did you mean 'port'?",
        "bad.yaml:8:17: hubs.a.auth.password: the shared password must be at least 8 characters",
        "bad.yaml:9:5: hubs.a.profils: unknown key 'profils' hint: did you mean 'profiles'?",
        "bad.yaml:10:3: hubs.B.name: 'B' is not allowed here",
        "bad.yaml:16:17: hubs.c.profiles[0].memory: 'lots' is not a size",
    ):
        assert text in out


def test_validate_accepts_the_demo_file(runs: Runs) -> None:
    result = runs["validate-demo"]
    assert result.returncode == 0, result.stderr
    assert "examples/fleet.yaml: fleet demo with 3 hub(s): research, university, college" in flat(result.stdout)


def _processes_using(path: Path) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "cwd"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            cwd = process.info["cwd"] or ""
        except psutil.Error:
            continue
        if str(path) in cmdline or cwd.startswith(str(path)):
            found.append(process)
    return found


@pytest.mark.parametrize(
    ("run", "state"),
    [("up", "tmp/state"), ("up-detach", "env-state")],
    ids=["foreground-state-dir-option", "detach-state-dir-from-environment"],
)
def test_up_with_an_invalid_file_changes_nothing(runs: Runs, run: str, state: str) -> None:
    result = runs[run]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "5 problems in the fleet file" in result.stderr
    assert "Nothing was changed." in result.stderr
    assert not (runs.folder / state).exists()
    assert not (runs.folder / "tmp").exists()
    assert not (runs.folder / ".hubfleet").exists()
    assert _processes_using(runs.folder / state) == []
    assert _processes_using(runs.bad_file) == []


def test_apply_refuses_an_invalid_file(runs: Runs) -> None:
    result = runs["apply"]
    assert result.returncode == 1
    assert "bad.yaml:3:3: front_door.prot" in flat(result.stderr)
    assert "Nothing was changed." in result.stderr
    assert not (runs.folder / "apply-state").exists()


def test_schema_prints_json(runs: Runs) -> None:
    result = runs["schema"]
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "hubs" in schema["properties"]
    assert schema["$defs"]["Hub"]["additionalProperties"] is False
