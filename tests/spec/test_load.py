"""Loading fleet files: the demo file, units, relative paths, the JSON Schema, and precise errors for bad files.

Pure and fast: no processes, no network; every fleet file is a small YAML string written to tmp_path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from hubfleet.spec import SpecError, json_schema, load, parse
from hubfleet.spec.auth import NativeAuth, SharedPasswordAuth
from hubfleet.spec.models import PaidPlan, PilotPlan
from hubfleet.spec.units import format_size, parse_duration, parse_size

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "fleet.yaml"

G = 1024**3
M = 1024**2

# A valid hub body (indented for `hubs:`), for cases that break something else.
NATIVE = "    auth: {type: native}\n"


def write(tmp_path: Path, text: str, name: str = "fleet.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path) -> list:
    with pytest.raises(SpecError) as info:
        load(path)
    return info.value.problems


# ------------------------------------------------------------------------------------------------ the demo file


def test_demo_file_loads_with_three_hubs() -> None:
    fleet = load(DEMO)
    assert fleet.name == "demo"
    assert list(fleet.hubs) == ["research", "university", "college"]
    assert fleet.front_door.url == "http://127.0.0.1:8000"
    for name, hub in fleet.hubs.items():
        assert hub.name == name  # the key under hubs: is the name


def test_demo_file_inherits_defaults_and_templates() -> None:
    fleet = load(DEMO)
    college, university, research = fleet.hubs["college"], fleet.hubs["university"], fleet.hubs["research"]
    # college (generic) lists its own `small` profile, and keeps its own culling timeout over the default 1h.
    assert college.template == "generic"
    assert [p.name for p in college.profiles] == ["small"]
    assert college.default_profile().name == "small"
    assert college.default_profile().memory == 1 * G
    assert college.default_profile().cpu == 1.0
    assert college.culling.timeout == 1800
    assert college.culling.enabled is True
    assert college.culling.every == 300  # the model's default, neither file nor defaults set it
    assert college.dask is None and college.storage.scratch is None
    # university gets its profile from the course template, and the culling timeout (1h) from defaults.
    assert university.template == "course"
    assert [(p.name, p.memory) for p in university.profiles] == [("small", 1 * G)]
    assert university.culling.timeout == 3600
    assert [f.name for f in university.storage.shared] == ["course-materials", "data-8", "stat-140"]
    # research gets profiles, scratch and Dask from the pangeo template, merged with its own storage and limits.
    assert research.template == "pangeo"
    assert [p.name for p in research.profiles] == ["small", "medium", "large"]
    assert research.default_profile().name == "small"
    assert research.storage.home_quota == 10 * G
    assert research.storage.scratch is not None and research.storage.scratch.size == 20 * G
    assert research.dask is not None and research.dask.enabled
    assert (research.dask.limits.max_cores, research.dask.limits.max_memory) == (3, 3 * G)
    assert (research.dask.worker_memory, research.dask.max_worker_memory) == (1 * G, 4 * G)


def test_demo_file_auth_plans_and_users() -> None:
    fleet = load(DEMO)
    research, college = fleet.hubs["research"], fleet.hubs["college"]
    assert isinstance(research.auth, SharedPasswordAuth)
    assert research.auth.password is not None
    assert research.auth.password.get_secret_value() == "ocean-demo-2026"
    assert "ocean-demo-2026" not in repr(research)  # the password is a secret
    assert isinstance(research.plan, PaidPlan) and research.plan.monthly_budget == 1500
    assert isinstance(college.plan, PilotPlan)
    assert (college.plan.start.isoformat(), college.plan.end.isoformat()) == ("2026-11-01", "2027-01-31")
    assert research.users == {"ada", "grace", "linus"}
    assert college.users == {"dana", "eli", "fay"}
    assert [(f.name, f.access) for f in research.storage.shared] == [
        ("data", {"modellers": "write", "everyone": "read"})
    ]


# ------------------------------------------------------------------------------------------------------ units


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512M", 512 * M),
        ("1.5G", int(1.5 * G)),
        ("2G", 2 * G),
        ("2GiB", 2 * G),
        ("2gb", 2 * G),
        ("64K", 64 * 1024),
        ("1T", 1024**4),
        (" 3 G ", 3 * G),
        ("100", 100),
        (4096, 4096),
    ],
)
def test_sizes_parse(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "G", "1.5X", "-1G", "1,5G", "2 GB of RAM", -1, True, None, 1.5])
def test_bad_sizes_are_errors(text: object) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1h30m", 5400),
        ("90s", 90),
        ("30m", 1800),
        ("1h", 3600),
        ("2d", 172800),
        ("1w", 604800),
        ("1.5h", 5400),
        ("1h 30m", 5400),
        ("45", 45),
        (600, 600),
    ],
)
def test_durations_parse(text: str | int, expected: int) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["forever", "", "h", "1x", "-5m", "1h30", "m30", -1, True, None])
def test_bad_durations_are_errors(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(("value", "text"), [(2 * G, "2G"), (1536 * M, "1536M"), (100, "100"), (0, "0")])
def test_sizes_format_back(value: int, text: str) -> None:
    assert format_size(value) == text
    assert parse_size(text) == value


def test_units_in_a_fleet_file(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles:\n      - name: p\n        memory: 1.5G\n"
        "    storage: {home_quota: 512M}\n    culling: {timeout: 1h30m, max_age: 2d, every: 90s}\n",
    )
    hub = load(path).hubs["a"]
    assert hub.profiles[0].memory == int(1.5 * G)
    assert hub.storage.home_quota == 512 * M
    assert (hub.culling.timeout, hub.culling.max_age, hub.culling.every) == (5400, 172800, 90)
    assert hub.profiles[0].model_dump()["memory"] == "1536M"  # sizes serialize back to their short spelling


def test_log_limits(tmp_path: Path) -> None:
    default = load(write(tmp_path, "name: t\nhubs:\n  a:\n" + NATIVE)).logs
    assert (default.max_size, default.keep) == (20 * M, 3)
    limits = load(write(tmp_path, "name: t\nlogs: {max_size: 5M, keep: 1}\nhubs:\n  a:\n" + NATIVE)).logs
    assert (limits.max_size, limits.keep) == (5 * M, 1)
    for bad, words in [("{max_size: 100K}", "at least 1M"), ("{keep: 0}", "greater than or equal to 1")]:
        with pytest.raises(SpecError) as raised:
            load(write(tmp_path, f"name: t\nlogs: {bad}\nhubs:\n  a:\n" + NATIVE))
        assert words in str(raised.value)


# ------------------------------------------------------------------------------------------------ relative paths


def test_relative_paths_resolve_against_the_fleet_files_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conf = tmp_path / "conf"
    write(conf, "long-enough-password\n", "secrets/pw.txt")
    path = write(
        conf,
        "name: t\nstate_dir: state\nhubs:\n  a:\n    auth:\n      type: shared-password\n"
        "      password_file: secrets/pw.txt\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the current directory does not matter
    fleet = load(path)
    auth = fleet.hubs["a"].auth
    assert isinstance(auth, SharedPasswordAuth)
    assert auth.password_file == (conf / "secrets" / "pw.txt").resolve()
    assert fleet.state_dir == (conf / "state").resolve()


def test_absolute_password_file_is_kept(tmp_path: Path) -> None:
    secret = write(tmp_path, "long-enough-password\n", "pw.txt")
    path = write(
        tmp_path / "conf",
        f"name: t\nhubs:\n  a:\n    auth:\n      type: shared-password\n      password_file: {secret}\n",
    )
    auth = load(path).hubs["a"].auth
    assert isinstance(auth, SharedPasswordAuth)
    assert auth.password_file == secret


def test_missing_fleet_file_is_a_spec_error(tmp_path: Path) -> None:
    (problem,) = problems_of(tmp_path / "nope.yaml")
    assert (problem.line, problem.column) == (1, 1)
    assert "cannot read the fleet file" in problem.message


# ------------------------------------------------------------------------------------------------- JSON Schema


def demo_data() -> dict:
    """The demo file as JSON data (dates as strings, as an editor's YAML language server sees them)."""
    return json.loads(json.dumps(YAML(typ="safe").load(DEMO.read_text(encoding="utf-8")), default=str))


def test_json_schema_is_json_and_describes_the_fleet() -> None:
    schema = json.loads(json.dumps(json_schema()))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["type"] == "object"
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) == {"name", "hubs"}
    assert {"name", "front_door", "paths", "internal_ports", "defaults", "hubs"} <= set(schema["properties"])
    assert schema["properties"]["hubs"]["additionalProperties"] == {"$ref": "#/$defs/Hub"}
    for model in ("Hub", "HubDefaults", "Profile", "Culling", "SharedPasswordAuth", "PilotPlan", "SharedFolder"):
        assert model in schema["$defs"]
        assert schema["$defs"][model]["additionalProperties"] is False
    # Hubs get their name from their key, and may inherit auth from defaults: neither is required in a hub.
    assert "name" not in schema["$defs"]["Hub"].get("required", [])
    assert "auth" not in schema["$defs"]["Hub"].get("required", [])


def test_json_schema_is_valid_and_accepts_the_demo_file() -> None:
    import jsonschema

    schema = json_schema()
    validator_class = jsonschema.validators.validator_for(schema)
    assert validator_class is jsonschema.Draft202012Validator
    validator_class.check_schema(schema)
    validator = validator_class(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(demo_data())]
    assert errors == []


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda d: d.update(hubz={}), "hubz"),
        (lambda d: d["hubs"]["college"].update(profils=[]), "profils"),
        (lambda d: d["hubs"].update(Research=d["hubs"].pop("research")), "Research"),
        (lambda d: d["hubs"]["college"]["auth"].update(type="ldap"), "ldap"),
        (lambda d: d["hubs"]["college"]["profiles"][0].update(memory="lots"), "lots"),
        (lambda d: d["hubs"]["college"]["profiles"][0].update(cpu=-1), "-1"),
    ],
)
def test_json_schema_rejects_mistakes(change, fragment: str) -> None:
    import jsonschema

    data = demo_data()
    change(data)
    errors = list(jsonschema.Draft202012Validator(json_schema()).iter_errors(data))
    assert errors
    assert any(fragment in str(e.message) or fragment in str(list(e.absolute_path)) for e in errors)


# ------------------------------------------------------------------------------------------------ invalid files


@dataclass
class Bad:
    """An invalid fleet file and the one problem it must produce."""

    id: str
    text: str
    line: int
    column: int | None  # None: the column is not meaningful for this case
    path: str
    fragment: str  # a key part of the message or the hint
    files: dict[str, str] = field(default_factory=dict)  # other files next to the fleet file


BAD_FILES = [
    Bad("yaml-syntax", "name: t\nhubs:\n  a:\n    auth: {type: native\n  b: 1\n", 4, 11, "", "never closed"),
    Bad(
        "yaml-bad-indent",
        "name: t\nhubs:\n  a:\n    auth:\n      type: native\n     admins: [x]\n",
        6,
        6,
        "",
        "not valid YAML",
    ),
    Bad("duplicate-key", "name: t\nhubs:\n  a:\n" + NATIVE + "  a:\n" + NATIVE, 5, 3, "", "'a' appears twice"),
    Bad("empty-file", "", 1, 1, "", "empty"),
    Bad("only-comments", "# nothing yet\n", 1, 1, "", "empty"),
    Bad("top-level-list", "- name: t\n- hubs: {}\n", 1, 1, "", "must be a mapping"),
    Bad("top-level-scalar", "just a string\n", 1, 1, "", "must be a mapping"),
    Bad("unknown-top-level-key", "name: t\ndefualts: {}\nhubs:\n  a:\n" + NATIVE, 2, 1, "defualts", "'defaults'?"),
    Bad(
        "unknown-key-in-hub",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profils: []\n",
        5,
        5,
        "hubs.a.profils",
        "did you mean 'profiles'?",
    ),
    Bad(
        "unknown-key-in-auth",
        "name: t\nhubs:\n  a:\n    auth:\n      type: native\n      admin: [x]\n",
        6,
        7,
        "hubs.a.auth.admin",
        "did you mean 'admins'?",
    ),
    Bad(
        "unknown-key-in-flow-mapping",
        "name: t\nhubs:\n  a: {auth: {type: native}, storage: {shard: []}}\n",
        3,
        39,
        "hubs.a.storage.shard",
        "did you mean 'shared'?",
    ),
    Bad("upper-case-hub-name", "name: t\nhubs:\n  Research:\n" + NATIVE, 3, 3, "hubs.Research.name", "lower-case"),
    Bad(
        "too-long-hub-name",
        "name: t\nhubs:\n  a-hub-name-longer-than-twenty:\n" + NATIVE,
        3,
        3,
        "hubs.a-hub-name-longer-than-twenty.name",
        "at most 20 characters",
    ),
    Bad("hub-name-differs", "name: t\nhubs:\n  a:\n" + NATIVE + "    name: b\n", 5, 11, "hubs.a.name", "drop 'name:'"),
    Bad("bad-fleet-name", "name: My Fleet\nhubs:\n  a:\n" + NATIVE, 1, 7, "name", "'My Fleet' is not allowed"),
    Bad("missing-hubs", "name: t\n", 1, 1, "hubs", "add 'hubs:'"),
    Bad("missing-auth", "name: t\nhubs:\n  a:\n    display_name: A\n", 4, 5, "hubs.a.auth", "required key 'auth'"),
    Bad(
        "wrong-auth-type",
        "name: t\nhubs:\n  a:\n    auth:\n      type: kerberos\n",
        5,
        13,
        "hubs.a.auth.type",
        "one of 'shared-password', 'native', 'github', 'oidc', 'cilogon', 'ldap'",
    ),
    Bad(
        "auth-without-type",
        "name: t\nhubs:\n  a:\n    auth:\n      admins: [x]\n",
        5,
        7,
        "hubs.a.auth",
        "set 'type:' to one of 'shared-password', 'native', 'github'",
    ),
    Bad(
        "shared-password-too-short",
        "name: t\nhubs:\n  a:\n    auth:\n      type: shared-password\n      password: short\n",
        6,
        17,
        "hubs.a.auth.password",
        "at least 8 characters",
    ),
    Bad(
        "password-and-password-file",
        "name: t\nhubs:\n  a:\n    auth:\n      type: shared-password\n      password: long-enough\n"
        "      password_file: pw.txt\n",
        5,
        7,
        "hubs.a.auth",
        "exactly one of password or password_file",
    ),
    Bad(
        "github-without-client-id",
        "name: t\nhubs:\n  a:\n    auth: {type: github, client_secret: s}\n",
        4,
        11,
        "hubs.a.auth.client_id",
        "add 'client_id:'",
    ),
    Bad(
        "bad-size",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles:\n      - name: p\n        memory: lots\n",
        7,
        17,
        "hubs.a.profiles[0].memory",
        "'lots' is not a size",
    ),
    Bad(
        "too-little-memory",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles:\n      - name: p\n        memory: 1M\n",
        7,
        17,
        "hubs.a.profiles[0].memory",
        "at least 64M",
    ),
    Bad(
        "negative-cpu",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles:\n      - name: p\n        cpu: -1\n",
        7,
        14,
        "hubs.a.profiles[0].cpu",
        "greater than 0",
    ),
    Bad(
        "bad-duration",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    culling:\n      timeout: forever\n",
        6,
        16,
        "hubs.a.culling.timeout",
        "'forever' is not a duration",
    ),
    Bad(
        "profile-for-unknown-group",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    groups: {staff: [x]}\n    profiles:\n      - name: big\n"
        "        groups: [stuff]\n",
        8,
        18,
        "hubs.a.profiles[0].groups[0]",
        "unknown group 'stuff'",
    ),
    Bad(
        "shared-folder-for-unknown-group",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    groups: {staff: [x]}\n    storage:\n      shared:\n"
        "        - name: data\n          access: {stuff: read}\n",
        9,
        20,
        "hubs.a.storage.shared[0].access.stuff",
        "groups of this hub: everyone, staff",
    ),
    Bad(
        "shared-folder-bad-access",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    storage:\n      shared:\n        - name: data\n"
        "          access: {everyone: rw}\n",
        8,
        30,
        "hubs.a.storage.shared[0].access.everyone",
        "'read' or 'write'",
    ),
    Bad(
        "shared-folder-named-scratch",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    storage:\n      shared:\n        - name: scratch\n"
        "          access: {everyone: read}\n",
        7,
        17,
        "hubs.a.storage.shared[0].name",
        "reserved for the per-user scratch folders",
    ),
    Bad(
        "upper-case-user",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    groups:\n      staff: [ada, Grace]\n",
        6,
        20,
        "hubs.a.groups.staff[1]",
        "write 'grace'",
    ),
    Bad(
        "upper-case-admin",
        "name: t\nhubs:\n  a:\n    auth:\n      type: native\n      admins: [Ada]\n",
        6,
        16,
        "hubs.a.auth.admins[0]",
        "upper-case",
    ),
    Bad(
        "reserved-group-name",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    groups:\n      everyone: [ada]\n",
        6,
        7,
        "hubs.a.groups.everyone",
        "reserved",
    ),
    Bad(
        "duplicate-profile-names",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles:\n      - name: p\n      - name: p\n",
        7,
        15,
        "hubs.a.profiles[1].name",
        "profile 'p' is defined twice",
    ),
    Bad(
        "two-default-profiles",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles:\n      - name: p\n        default: true\n"
        "      - name: q\n        default: true\n",
        6,
        7,
        "hubs.a.profiles",
        "keep one default profile",
    ),
    Bad(
        "no-profiles",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    profiles: []\n",
        5,
        15,
        "hubs.a.profiles",
        "at least one profile",
    ),
    Bad(
        "pilot-ends-before-start",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    plan:\n      type: pilot\n      start: 2026-02-01\n"
        "      end: 2026-01-31\n",
        8,
        12,
        "hubs.a.plan.end",
        "end on or after its start",
    ),
    Bad(
        "unknown-plan-type",
        "name: t\nhubs:\n  a:\n" + NATIVE + "    plan:\n      type: free\n",
        6,
        13,
        "hubs.a.plan.type",
        "one of 'pilot', 'paid'",
    ),
    Bad(
        "front-door-port-inside-internal-ports",
        "name: t\nfront_door:\n  port: 18200\nhubs:\n  a:\n" + NATIVE,
        3,
        9,
        "front_door.port",
        "inside internal_ports (18100-18999)",
    ),
    Bad(
        "internal-ports-reversed",
        "name: t\ninternal_ports:\n  start: 20000\n  end: 19000\nhubs:\n  a:\n" + NATIVE,
        4,
        8,
        "internal_ports.end",
        "greater than start",
    ),
    Bad(
        "too-few-internal-ports",
        "name: t\ninternal_ports: {start: 20000, end: 20003}\nhubs:\n  a:\n" + NATIVE + "  b:\n" + NATIVE,
        2,
        17,
        "internal_ports",
        "the fleet needs 5",
    ),
    Bad(
        "mistake-in-defaults",
        "name: t\ndefaults:\n  culling:\n    timeout: forever\nhubs:\n  a:\n" + NATIVE + "  b:\n" + NATIVE,
        4,
        14,
        "defaults.culling.timeout",
        "'forever' is not a duration",
    ),
    Bad(
        "unknown-key-in-defaults",
        "name: t\ndefaults:\n  culling:\n    timout: 1h\nhubs:\n  a:\n" + NATIVE + "  b:\n" + NATIVE,
        4,
        5,
        "defaults.culling.timout",
        "did you mean 'timeout'?",
    ),
    Bad(
        "mistake-in-defaults-plan",
        "name: t\ndefaults:\n  plan: {type: pilot, start: 2026-02-01, end: 2026-01-01}\nhubs:\n  a:\n"
        + NATIVE
        + "  b:\n"
        + NATIVE,
        3,
        47,
        "defaults.plan.end",
        "end on or after its start",
    ),
    Bad(
        "mistake-in-defaults-auth",
        "name: t\ndefaults:\n  auth: {type: shared-password, password: short}\nhubs:\n  a:\n"
        "    auth: {admins: [x]}\n  b:\n    auth: {admins: [y]}\n",
        3,
        43,
        "defaults.auth.password",
        "inherited from defaults by hubs a, b",
    ),
    Bad(
        "defaults-profile-for-unknown-group",
        "name: t\ndefaults:\n  profiles:\n    - name: big\n      groups: [staff]\nhubs:\n  a:\n"
        + NATIVE
        + "    groups: {staff: [x]}\n  b:\n"
        + NATIVE,
        5,
        16,
        "defaults.profiles[0].groups[0]",
        "unknown group 'staff' (inherited from defaults by hub b)",
    ),
    Bad(
        "unreadable-password-file",
        "name: t\nhubs:\n  a:\n    auth:\n      type: shared-password\n      password_file: missing.txt\n",
        6,
        22,
        "hubs.a.auth.password_file",
        "cannot read",
    ),
    Bad(
        "password-file-is-a-folder",
        "name: t\nhubs:\n  a:\n    auth:\n      type: shared-password\n      password_file: secrets\n",
        6,
        22,
        "hubs.a.auth.password_file",
        "cannot read",
        files={"secrets/.keep": ""},
    ),
    Bad(
        "password-file-too-short",
        "name: t\nhubs:\n  a:\n    auth:\n      type: shared-password\n      password_file: pw.txt\n",
        6,
        22,
        "hubs.a.auth.password_file",
        "shorter than 8 characters",
        files={"pw.txt": "short\n"},
    ),
]


@pytest.mark.parametrize("bad", BAD_FILES, ids=[bad.id for bad in BAD_FILES])
def test_invalid_fleet_file(tmp_path: Path, bad: Bad) -> None:
    for name, content in bad.files.items():
        write(tmp_path, content, name)
    path = write(tmp_path, bad.text)
    problems = problems_of(path)
    assert len(problems) == 1, "\n".join(map(str, problems))
    (problem,) = problems
    assert problem.file == str(path)
    assert problem.line == bad.line, str(problem)
    if bad.column is not None:
        assert problem.column == bad.column, str(problem)
    assert problem.path == bad.path
    assert bad.fragment in f"{problem.message}\nhint: {problem.hint}"
    assert str(problem).startswith(f"{path}:{problem.line}:{problem.column}: ")


def test_there_are_many_kinds_of_invalid_files() -> None:
    assert len({bad.id for bad in BAD_FILES}) == len(BAD_FILES) >= 12


def test_a_mistake_in_defaults_is_reported_once_not_per_hub(tmp_path: Path) -> None:
    hubs = "".join(f"  h{i}:\n" + NATIVE for i in range(5))
    path = write(tmp_path, "name: t\ndefaults:\n  profiles:\n    - name: p\n      memory: lots\nhubs:\n" + hubs)
    (problem,) = problems_of(path)
    assert (problem.line, problem.column, problem.path) == (5, 15, "defaults.profiles[0].memory")


def test_unknown_keys_without_a_close_match_list_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "name: t\nhubs:\n  a:\n" + NATIVE + "    xyzzy: 1\n")
    (problem,) = problems_of(path)
    assert problem.path == "hubs.a.xyzzy"
    assert problem.hint.startswith("allowed keys here: name, display_name, community")


def test_a_setting_at_the_wrong_level_says_where_it_belongs(tmp_path: Path) -> None:
    text = (
        "name: t\nsleep: {after: 1h}\ndefaults:\n  front_door: {port: 80}\nhubs:\n  a:\n"
        + NATIVE
        + "    logs: {keep: 3}\n"
    )
    found = {problem.path: problem.hint for problem in problems_of(write(tmp_path, text))}
    assert found["sleep"].startswith("'sleep' is a hub's setting: put it under a hub (hubs: NAME:) or under defaults:")
    for path, key in (("defaults.front_door", "front_door"), ("hubs.a.logs", "logs")):
        assert found[path] == f"'{key}' is a setting of the whole fleet: move it to the top level of the file"


def test_several_mistakes_are_all_reported_at_once_sorted_by_line(tmp_path: Path) -> None:
    text = (
        "name: t\n"  # 1
        "front_door:\n"  # 2
        "  prot: 8000\n"  # 3  unknown key
        "internal_ports:\n"  # 4
        "  {start: 20000, end: 19000}\n"  # 5  reversed range
        "hubs:\n"  # 6
        "  Zeta:\n"  # 7  bad hub name
        + NATIVE  # 8
        + "  b:\n"  # 9
        "    auth:\n"  # 10
        "      type: shared-password\n"  # 11
        "      password: short\n"  # 12 too short
        "    profils: []\n"  # 13 unknown key
        "    profiles:\n"  # 14
        "      - name: p\n"  # 15
        "        memory: lots\n"  # 16 bad size
        "  c:\n"  # 17
        + NATIVE  # 18
        + "    profiles:\n"  # 19
        "      - name: q\n"  # 20
        "        groups: [ghosts]\n"  # 21 unknown group (a cross check, in a hub that is otherwise valid)
    )
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load(path)
    problems = info.value.problems
    found = [(p.line, p.path) for p in problems]
    assert found == [
        (3, "front_door.prot"),
        (5, "internal_ports.end"),
        (7, "hubs.Zeta.name"),
        (12, "hubs.b.auth.password"),
        (13, "hubs.b.profils"),
        (16, "hubs.b.profiles[0].memory"),
        (21, "hubs.c.profiles[0].groups[0]"),
    ]
    assert found == sorted(found, key=lambda item: item[0])
    assert str(info.value).startswith("7 problems in the fleet file:\n")
    for problem in problems:
        assert f"{path}:{problem.line}:{problem.column}: {problem.path}: {problem.message}" in str(info.value)


def test_parse_names_the_given_path(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as info:
        parse("name: t\nhubs:\n  a:\n" + NATIVE + "    profils: []\n", tmp_path / "named.yaml")
    assert info.value.problems[0].file == str(tmp_path / "named.yaml")


def test_a_valid_small_file(tmp_path: Path) -> None:
    fleet = load(write(tmp_path, "name: t\nhubs:\n  a:\n" + NATIVE))
    hub = fleet.hubs["a"]
    assert isinstance(hub.auth, NativeAuth)
    assert [p.name for p in hub.profiles] == ["default"]
    assert hub.default_profile().memory == 2 * G


def test_defaults_merge_key_by_key_and_another_type_replaces(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "name: t\n"
        "defaults:\n"
        "  auth: {type: shared-password, password: long-enough, admins: [ada]}\n"
        "  plan: {type: pilot, start: 2026-01-01, end: 2026-02-01}\n"
        "  groups: {staff: [ada]}\n"
        "  culling: {timeout: 2h}\n"
        "hubs:\n"
        "  same:\n"
        "    auth: {allowed_users: [bob]}\n"
        "    groups: {students: [bob]}\n"
        "    culling: {every: 1m}\n"
        "  other:\n"
        "    auth: {type: native}\n"
        "    plan: {type: paid, monthly_fee: 5}\n",
    )
    fleet = load(path)
    same, other = fleet.hubs["same"], fleet.hubs["other"]
    # Mappings merge key by key.
    assert isinstance(same.auth, SharedPasswordAuth)
    assert (same.auth.admins, same.auth.allowed_users) == (["ada"], ["bob"])
    assert same.groups == {"staff": ["ada"], "students": ["bob"]}
    assert (same.culling.timeout, same.culling.every) == (7200, 60)
    assert isinstance(same.plan, PilotPlan)
    # An auth or plan of another type replaces the one from defaults (its keys would mean nothing).
    assert isinstance(other.auth, NativeAuth)
    assert other.auth.admins == []
    assert isinstance(other.plan, PaidPlan)
    assert other.plan.monthly_fee == 5
