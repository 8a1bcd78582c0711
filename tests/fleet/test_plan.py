"""`plan`: what `hubfleet apply` would change between the running fleet and a fleet file (pure, no processes)."""

from __future__ import annotations

import json
from pathlib import Path

from hubfleet.fleet.plan import FleetPlan, HubChange, plan
from hubfleet.spec import Fleet, parse

BASE = """\
name: t
front_door:
  port: 8000
defaults:
  culling:
    timeout: 1h
hubs:
  research:
    auth:
      type: shared-password
      password: first-password
      admins: [ada]
      allowed_users: [bob]
    groups:
      modellers: [ada, grace]
      observers: [linus]
    profiles:
      - name: small
        memory: 1G
        default: true
      - name: large
        memory: 4G
        groups: [modellers]
  college:
    auth:
      type: native
      admins: [dana]
"""

EXTRA_HUB = """\
  school:
    auth: {type: native}
"""


def fleet(text: str = BASE) -> Fleet:
    return parse(text, Path("fleet.yaml"))


def edit(text: str, old: str, new: str) -> str:
    """`text` with `old` (which must occur exactly once) replaced by `new`."""
    assert text.count(old) == 1, old
    return text.replace(old, new)


def hub_change(changes: FleetPlan, name: str) -> HubChange:
    (change,) = [c for c in changes.hubs if c.name == name]
    return change


def kinds(changes: FleetPlan) -> dict[str, str]:
    return {c.name: c.kind for c in changes.hubs}


def test_nothing_running_means_every_hub_is_added() -> None:
    changes = plan(None, fleet())
    assert kinds(changes) == {"research": "added", "college": "added"}
    assert changes.fleet_changed == []
    assert not changes.empty
    assert all(not c.needs_restart and not c.live for c in changes.hubs)


def test_identical_files_make_an_empty_plan() -> None:
    changes = plan(fleet(), fleet())
    assert changes.empty
    assert changes.fleet_changed == []
    assert kinds(changes) == {"college": "unchanged", "research": "unchanged"}
    assert all(c.lines() == ["unchanged"] for c in changes.hubs)


def test_reordering_and_reformatting_changes_nothing() -> None:
    reformatted = edit(
        BASE,
        "    groups:\n      modellers: [ada, grace]\n",
        "    groups:\n      modellers:\n        - ada\n        - grace\n",
    )
    reformatted = edit(reformatted, "        memory: 4G\n", "        memory: 4096M\n")
    assert plan(fleet(), fleet(reformatted)).empty


def test_adding_a_hub() -> None:
    changes = plan(fleet(), fleet(BASE + EXTRA_HUB))
    assert kinds(changes) == {"college": "unchanged", "research": "unchanged", "school": "added"}
    assert changes.fleet_changed == []
    assert not changes.empty


def test_removing_a_hub() -> None:
    without_college = BASE[: BASE.index("  college:")]
    changes = plan(fleet(), fleet(without_college))
    assert kinds(changes) == {"college": "removed", "research": "unchanged"}
    assert hub_change(changes, "college").lines() == ["removed"]


def test_adding_users_is_a_live_change_without_restart() -> None:
    text = edit(BASE, "allowed_users: [bob]", "allowed_users: [bob, carol]")
    text = edit(text, "modellers: [ada, grace]", "modellers: [ada, grace, hedy]")
    change = hub_change(plan(fleet(), fleet(text)), "research")
    assert change.kind == "changed"
    assert change.users_added == ["carol", "hedy"]
    assert change.members_added == {"modellers": ["hedy"]}
    assert change.users_removed == [] and change.members_removed == {}
    assert change.settings_changed == []
    assert change.live
    assert not change.needs_restart
    assert change.lines() == ["users added: carol, hedy", "group modellers: + hedy"]


def test_adding_an_existing_user_to_a_group_adds_no_user() -> None:
    text = edit(BASE, "observers: [linus]", "observers: [linus, bob]")
    change = hub_change(plan(fleet(), fleet(text)), "research")
    assert change.users_added == []
    assert change.members_added == {"observers": ["bob"]}
    assert change.live and not change.needs_restart


def test_removing_a_group_member() -> None:
    text = edit(BASE, "modellers: [ada, grace]", "modellers: [ada]")
    change = hub_change(plan(fleet(), fleet(text)), "research")
    assert change.kind == "changed"
    assert change.members_removed == {"modellers": ["grace"]}
    assert change.users_removed == ["grace"]  # grace is in no other group and not allowed otherwise
    assert change.members_added == {}
    assert change.live and not change.needs_restart


def test_removing_a_member_who_stays_allowed_keeps_the_user() -> None:
    text = edit(BASE, "modellers: [ada, grace]", "modellers: [grace]")
    change = hub_change(plan(fleet(), fleet(text)), "research")
    assert change.members_removed == {"modellers": ["ada"]}
    assert change.users_removed == []  # ada is still an admin


def test_adding_and_removing_groups_and_admins() -> None:
    text = edit(BASE, "      observers: [linus]\n", "      reviewers: [linus]\n")
    text = edit(text, "admins: [ada]", "admins: [ada, bob]")
    change = hub_change(plan(fleet(), fleet(text)), "research")
    assert change.groups_added == ["reviewers"]
    assert change.groups_removed == ["observers"]
    assert change.members_added == {"reviewers": ["linus"]}
    assert change.members_removed == {}  # the whole group goes
    assert change.admins_added == ["bob"]
    assert change.settings_changed == []
    assert change.live and not change.needs_restart


def test_changing_a_profiles_memory_needs_a_restart() -> None:
    text = edit(BASE, "memory: 4G", "memory: 8G")
    changes = plan(fleet(), fleet(text))
    change = hub_change(changes, "research")
    assert change.kind == "changed"
    assert change.settings_changed == ["profiles"]
    assert change.needs_restart
    assert not change.live
    assert change.lines() == ["settings changed (profiles): hub restarts, servers keep running"]
    assert hub_change(changes, "college").kind == "unchanged"
    assert changes.fleet_changed == []


def test_changing_the_shared_password_needs_a_restart() -> None:
    text = edit(BASE, "password: first-password", "password: second-password")
    change = hub_change(plan(fleet(), fleet(text)), "research")
    assert change.settings_changed == ["auth"]
    assert change.needs_restart
    assert not change.live


def test_changing_the_auth_type_needs_a_restart() -> None:
    text = edit(
        BASE,
        "      type: native\n      admins: [dana]\n",
        "      type: shared-password\n      password: a-new-one!\n      admins: [dana]\n",
    )
    change = hub_change(plan(fleet(), fleet(text)), "college")
    assert change.settings_changed == ["auth"]
    assert change.needs_restart


def test_a_change_in_defaults_reaches_every_hub_inheriting_it() -> None:
    text = edit(BASE, "    timeout: 1h\n", "    timeout: 2h\n")
    changes = plan(fleet(), fleet(text))
    for name in ("research", "college"):
        change = hub_change(changes, name)
        assert change.settings_changed == ["culling"]
        assert change.needs_restart


def test_changing_the_front_door_port_is_a_fleet_change() -> None:
    text = edit(BASE, "  port: 8000\n", "  port: 8001\n")
    changes = plan(fleet(), fleet(text))
    assert changes.fleet_changed == ["front_door"]
    assert not changes.empty
    assert all(c.kind == "unchanged" for c in changes.hubs)


def test_the_plan_is_json() -> None:
    text = edit(BASE, "memory: 4G", "memory: 8G")
    text = edit(text, "allowed_users: [bob]", "allowed_users: [bob, carol]")
    document = json.loads(json.dumps(plan(fleet(), fleet(text + EXTRA_HUB)).to_dict()))
    assert document["fleet_changed"] == []
    hubs = {h["name"]: h for h in document["hubs"]}
    assert hubs["research"] == {
        "name": "research",
        "kind": "changed",
        "users_added": ["carol"],
        "settings_changed": ["profiles"],
        "needs_restart": True,
    }
    assert hubs["school"] == {"name": "school", "kind": "added", "needs_restart": False}
    assert hubs["college"] == {"name": "college", "kind": "unchanged", "needs_restart": False}


def test_an_environments_packages_change_needs_no_hub_restart_its_title_does() -> None:
    text = edit(BASE, "  college:\n", "  college:\n    environments:\n      lab: {packages: [six]}\n")
    packages = edit(text, "packages: [six]", "packages: [six, attrs]")
    assert kinds(plan(fleet(text), fleet(packages)))["college"] == "unchanged"  # `apply` builds a new version
    titled = edit(text, "packages: [six]", "packages: [six], display_name: Lab")
    assert hub_change(plan(fleet(text), fleet(titled)), "college").settings_changed == ["environments"]
