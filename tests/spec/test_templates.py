"""Community templates: shipped valid, merged under defaults and the hub, errors pointing at the fleet file.

Pure and fast: fleet files are strings, the CLI runs in-process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from typer.testing import CliRunner

from hubfleet.cli import app
from hubfleet.spec import SpecError, parse, templates
from hubfleet.spec.checks import EVERYONE
from hubfleet.spec.models import Hub, Template

G = 1024**3
DAY = 86400


def hub_of(text: str, name: str = "a") -> Hub:
    return parse(text).hubs[name]


def problems(text: str) -> list:
    with pytest.raises(SpecError) as info:
        parse(text, Path("fleet.yaml"))
    return info.value.problems


# ------------------------------------------------------------------------------------------- shipped templates


def test_every_template_name_has_a_file_and_every_file_a_name() -> None:
    assert templates.names() == sorted(t.value for t in Template)
    assert Template(templates.DEFAULT) is Template.generic


@pytest.mark.parametrize("name", [t.value for t in Template])
def test_each_template_is_valid_and_described(name: str) -> None:
    template = templates.get(name)
    assert template.description and "\n" not in template.description and len(template.description) <= 120
    assert set(template.hub) <= set(Hub.model_fields) - templates.FORBIDDEN_KEYS - {"auth", "backend", "plan"}
    # A hub that only names the template is valid, cross checks included, and gets the template's settings.
    # (The operator allows the r-stats template's Debian packages.)
    allowed = "builds: {debian_packages: [r-base, r-cran-irkernel]}\n"
    hub = hub_of(f"name: t\n{allowed}hubs:\n  a:\n    template: {name}\n    auth: {{type: native}}\n")
    assert hub.template == name
    dumped = hub.model_dump(mode="json")
    for key, value in template.hub.items():
        assert (
            dumped[key]
            == Hub.model_validate({"name": "a", "auth": {"type": "native"}, key: value}).model_dump(mode="json")[key]
        )


def test_generic_is_todays_defaults() -> None:
    plain = hub_of("name: t\nhubs:\n  a:\n    auth: {type: native}\n")
    generic = hub_of("name: t\nhubs:\n  a:\n    template: generic\n    auth: {type: native}\n")
    assert templates.get("generic").hub == {}
    assert generic == plain


def test_pangeo() -> None:
    hub = hub_of("name: t\nhubs:\n  a:\n    template: pangeo\n    auth: {type: native}\n")
    assert hub.dask is not None and hub.dask.enabled
    assert hub.storage.scratch is not None
    assert (hub.storage.scratch.size, hub.storage.scratch.max_age) == (20 * G, 7 * DAY)
    assert [(f.name, f.access) for f in hub.storage.shared] == [("data", {EVERYONE: "read"})]
    assert [(p.name, p.cpu, p.memory, p.default) for p in hub.profiles] == [
        ("small", 1, 2 * G, True),
        ("medium", 2, 4 * G, False),
        ("large", 4, 8 * G, False),
    ]
    assert {p.environment for p in hub.profiles} == {"pangeo"}
    assert {"xarray", "zarr", "intake", "cartopy"} <= set(hub.environments["pangeo"].packages)


def test_r_stats_needs_the_operators_debian_packages() -> None:
    found = problems("name: t\nhubs:\n  a:\n    template: r-stats\n    auth: {type: native}\n")
    assert [(p.line, p.message) for p in found] == [
        (4, "the Debian package r-base is not allowed on this fleet (from template 'r-stats')"),
        (4, "the Debian package r-cran-irkernel is not allowed on this fleet (from template 'r-stats')"),
    ]
    hub = hub_of(
        "name: t\nbuilds: {debian_packages: ['r-*']}\nhubs:\n  a:\n    template: r-stats\n    auth: {type: native}\n"
    )
    assert hub.environments["r-stats"].kernels == ["r"]
    assert {p.environment for p in hub.profiles} == {"r-stats"}


def test_course() -> None:
    hub = hub_of("name: t\nhubs:\n  a:\n    template: course\n    auth: {type: native}\n")
    assert [(p.name, p.cpu, p.memory, p.default) for p in hub.profiles] == [("small", 1, 1 * G, True)]
    assert hub.profiles[0].environment == "course" and "scikit-learn" in hub.environments["course"].packages
    assert hub.culling.enabled and hub.culling.timeout == 3600
    assert [(f.name, f.access) for f in hub.storage.shared] == [("course-materials", {EVERYONE: "read"})]
    assert hub.dask is None and hub.storage.scratch is None


# ------------------------------------------------------------------------------------------------- precedence

PRECEDENCE = """\
name: t
defaults:
  template: pangeo
  culling: {timeout: 2h}
  storage: {home_quota: 5G}
  dask: {limits: {max_cores: 2}}
hubs:
  a:
    auth: {type: native}
    storage:
      scratch: {size: 1G}
      shared:
        - name: data
          access: {everyone: read, curators: write}
    groups: {curators: [ann]}
    dask: {limits: {max_memory: 3G}}
  b:
    template: course
    auth: {type: native}
    culling: {every: 1m}
  c:
    template: generic
    auth: {type: native}
"""


def test_template_under_defaults_under_the_hub() -> None:
    fleet = parse(PRECEDENCE)
    a, b, c = fleet.hubs["a"], fleet.hubs["b"], fleet.hubs["c"]
    # a: pangeo from defaults.template; mappings merge key by key through all three layers.
    assert a.template == "pangeo"
    assert a.culling.timeout == 7200  # defaults over the template's default
    assert a.storage.home_quota == 5 * G  # from defaults
    assert a.storage.scratch is not None
    assert (a.storage.scratch.size, a.storage.scratch.max_age) == (1 * G, 7 * DAY)  # hub, then template
    assert a.dask is not None and a.dask.enabled and a.dask.worker_memory == 2 * G  # template
    assert (a.dask.limits.max_cores, a.dask.limits.max_memory) == (2, 3 * G)  # defaults, hub
    assert a.dask.limits.max_clusters == 2  # template
    # Lists replace: the hub's shared folders replace the template's (here to add a writer group).
    assert [(f.name, f.access) for f in a.storage.shared] == [("data", {"everyone": "read", "curators": "write"})]
    assert [p.name for p in a.profiles] == ["small", "medium", "large"]
    # b: its own template wins over defaults.template, and defaults still apply over it.
    assert b.template == "course"
    assert b.dask is not None and b.dask.worker_memory == 1 * G  # the `dask:` of defaults over the model's defaults
    assert (b.culling.timeout, b.culling.every) == (7200, 60)
    assert [f.name for f in b.storage.shared] == ["course-materials"]
    assert b.storage.home_quota == 5 * G
    # c: generic, so only defaults (a `dask:` in defaults is a Dask section with its default `enabled: true`).
    assert c.storage.scratch is None and c.storage.shared == []
    assert c.dask is not None and c.dask.limits.max_cores == 2 and c.dask.worker_memory == 1 * G


def test_defaults_lists_replace_the_templates() -> None:
    text = "name: t\ndefaults:\n  profiles: [{name: one, cpu: 1, memory: 1G}]\nhubs:\n  a:\n    template: pangeo\n"
    hub = hub_of(text + "    auth: {type: native}\n")
    assert [p.name for p in hub.profiles] == ["one"]


def test_the_description_is_not_merged() -> None:
    # Otherwise `description:` would be an unknown key of every hub built on the template.
    for name in templates.names():
        assert templates.hub_data(name) is not None
        assert "description" not in (templates.hub_data(name) or {})


def test_hub_data_is_a_fresh_copy() -> None:
    first = templates.hub_data("pangeo")
    assert first is not None
    first["dask"]["enabled"] = False
    assert (templates.hub_data("pangeo") or {})["dask"]["enabled"] is True


# ---------------------------------------------------------------------------------------------------- errors


def test_an_unknown_template_points_at_the_hubs_template_line() -> None:
    (problem,) = problems("name: t\nhubs:\n  a:\n    auth: {type: native}\n    template: astro\n")
    assert (problem.line, problem.column, problem.path) == (5, 15, "hubs.a.template")
    assert "'generic', 'course', 'pangeo' or 'r-stats'" in problem.message


def _broken(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pretend the shipped pangeo template had a mistake (the safety net when one ever does)."""
    real = templates.hub_data

    def hub_data(name: object) -> dict[str, Any] | None:
        data = real(name)
        if name == "pangeo" and data is not None:
            data["storage"]["scratch"]["size"] = "lots"
            data["profiles"][2]["groups"] = ["ghosts"]
        return data

    monkeypatch.setattr(templates, "hub_data", hub_data)


def test_a_mistake_in_a_template_points_at_the_hubs_template_line(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch)
    text = "name: t\nhubs:\n  a:\n    auth: {type: native}\n    template: pangeo\n"
    (problem,) = problems(text)
    assert (problem.line, problem.column, problem.path) == (5, 15, "hubs.a.storage.scratch.size")
    assert problem.message.endswith("(from template 'pangeo')") and "'lots' is not a size" in problem.message
    assert "hubfleet template show pangeo" in problem.hint
    # Once the hub overrides the broken value, the cross check on the template's profiles is reported the same way.
    (problem,) = problems(text + "    storage: {scratch: {size: 1G}}\n")
    assert (problem.line, problem.path) == (5, "hubs.a.profiles[2].groups[0]")
    assert "unknown group 'ghosts' (from template 'pangeo')" in problem.message


def test_a_mistake_in_a_template_chosen_in_defaults_points_there(monkeypatch: pytest.MonkeyPatch) -> None:
    _broken(monkeypatch)
    text = "name: t\ndefaults:\n  template: pangeo\nhubs:\n  a:\n    auth: {type: native}\n  b:\n"
    (problem,) = problems(text + "    auth: {type: native}\n")
    assert (problem.line, problem.column) == (3, 13)
    assert "(from template 'pangeo')" in problem.message


# ------------------------------------------------------------------------------------------------------- CLI


def test_template_list() -> None:
    result = CliRunner().invoke(app, ["template", "list"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in templates.names():
        assert name in result.output
        assert templates.get(name).description in result.output


def test_template_show_prints_the_hub_keys() -> None:
    result = CliRunner().invoke(app, ["template", "show", "pangeo"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("# Template pangeo: ")
    assert YAML(typ="safe").load(result.output) == templates.get("pangeo").hub
    # What it prints works as a hub of a fleet file, and gives the same hub as `template: pangeo`.
    body = "".join(f"    {line}\n" for line in result.output.splitlines())
    copied = hub_of(f"name: t\nhubs:\n  a:\n    auth: {{type: native}}\n{body}")
    assert copied == hub_of("name: t\nhubs:\n  a:\n    auth: {type: native}\n    template: pangeo\n").model_copy(
        update={"template": Template.generic}
    )


def test_template_show_an_unknown_name() -> None:
    result = CliRunner().invoke(app, ["template", "show", "astro"])
    assert result.exit_code == 1
    assert "no template 'astro'" in result.output and "course, generic, pangeo" in result.output
