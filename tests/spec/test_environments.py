"""Environments in the fleet file: fleet- and hub-level, from templates, named by profiles, with clear errors.

Pure and fast: no builds here (tests/envs build real environments).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hubfleet.spec import SpecError, parse
from hubfleet.spec.environments import debian_allowed, python_interpreters


def problems(text: str, tmp_path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        parse(text, tmp_path / "fleet.yaml")
    return [f"{p.line}:{p.path}: {p.message} | {p.hint}" for p in info.value.problems]


def test_fleet_and_hub_environments_resolve_per_hub(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("six\n")
    fleet = parse(
        """\
name: f
environments:
  base: {packages: [six], description: the campus stack}
  shared: {requirements_file: requirements.txt}
hubs:
  one:
    auth: {type: native}
    environments:
      base: {packages: [six, 'attrs>=23']}
    profiles:
      - {name: a, environment: base}
      - {name: b, environment: [shared, base]}
  two:
    auth: {type: native}
    profiles:
      - {name: a, environment: base}
      - {name: plain}
""",
        tmp_path / "fleet.yaml",
    )
    one, two = fleet.hubs["one"], fleet.hubs["two"]
    # A hub's own environment replaces the fleet's of the same name, for that hub only.
    assert fleet.environments_of(one)["base"].key == "one/base"
    assert fleet.environments_of(two)["base"].key == "base"
    assert fleet.environments_of(one)["shared"].key == "shared"
    assert set(fleet.all_environments()) == {"base", "shared", "one/base"}
    # Relative files are relative to the fleet file.
    assert fleet.environments["shared"].requirements_file == tmp_path / "requirements.txt"
    assert one.profiles[1].environments == ["shared", "base"]
    assert two.profiles[1].environments == []


def test_unknown_environment_python_files_and_debian_packages_are_reported(tmp_path: Path) -> None:
    found = problems(
        """\
name: f
builds: {debian_packages: ['r-cran-*']}
environments:
  old: {python: '3.4'}
  r: {debian_packages: [r-cran-irkernel, r-base], kernels: [r]}
  locked: {lock_file: missing.lock}
hubs:
  one:
    auth: {type: native}
    profiles:
      - {name: a, environment: [old, nope]}
""",
        tmp_path,
    )
    text = "\n".join(found)
    assert "4:environments.old.python: Python 3.4 is not on this machine" in text
    assert "5:environments.r.debian_packages[1]: the Debian package r-base is not allowed" in text
    assert "6:environments.locked.lock_file: cannot read" in text
    assert "11:hubs.one.profiles[0].environment[1]: profile 'a' names environment 'nope'" in text
    assert len(found) == 4


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ("{packages: ['not a requirement!']}", "is not a valid requirement"),
        ("{packages: ['x @ http://example.org/x.whl']}", "only https:// and file:// URLs"),
        ("{lock_file: a.txt, packages: [six]}", "a lock_file lists every package"),
        ("{kernels: [r]}", "the r kernel needs the Debian package r-cran-irkernel"),
        ("{kernels: [julia]}", "Input should be 'r'"),
        ("{python: '3'}", "'3' is not allowed here"),
        ("{debian_packages: ['R Base']}", "is not allowed here"),
        ("{pakages: [six]}", "unknown key 'pakages'"),
    ],
)
def test_bad_environment_specs_are_refused_where_they_are(env: str, message: str, tmp_path: Path) -> None:
    found = problems(f"name: f\nenvironments:\n  e: {env}\nhubs:\n  one:\n    auth: {{type: native}}\n", tmp_path)
    assert any(message in line and line.startswith("3:environments.e") for line in found), found


def test_a_profile_environment_list_must_name_each_once(tmp_path: Path) -> None:
    found = problems(
        "name: f\nenvironments: {e: {}}\nhubs:\n  one:\n    auth: {type: native}\n"
        "    profiles: [{name: a, environment: [e, e]}]\n",
        tmp_path,
    )
    assert any("environments listed twice: e" in line for line in found)


def test_machine_facts() -> None:
    assert "3.11" in python_interpreters()  # Debian 12's Python, readable by every user
    assert debian_allowed("r-cran-irkernel", ["r-base", "r-cran-*"])
    assert not debian_allowed("r-cran-irkernel", ["r-cran"])
    assert not debian_allowed("openssh-server", ["*ssh"])
