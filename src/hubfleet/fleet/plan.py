"""What `apply` would change: the difference between the running fleet and a fleet file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from hubfleet.edu.courses import fleet_file_groups
from hubfleet.spec.checks import COURSE_MEMBER_LISTS
from hubfleet.spec.models import Fleet, Hub

LIVE_FIELDS = {"auth", "groups", "courses"}
"""Hub fields whose user and group parts change through the hub's API, without a restart."""

AUTH_MEMBERSHIP = {"admins", "allowed_users"}
"""Auth fields that only name users (changed live)."""

FLEET_FIELDS_NEEDING_RESTART = ("front_door", "paths", "internal_ports", "state_dir", "name")


@dataclass
class HubChange:
    """How one hub changes."""

    name: str
    kind: Literal["added", "removed", "changed", "unchanged"]
    users_added: list[str] = field(default_factory=list)
    users_removed: list[str] = field(default_factory=list)
    admins_added: list[str] = field(default_factory=list)
    admins_removed: list[str] = field(default_factory=list)
    groups_added: list[str] = field(default_factory=list)
    groups_removed: list[str] = field(default_factory=list)
    members_added: dict[str, list[str]] = field(default_factory=dict)
    members_removed: dict[str, list[str]] = field(default_factory=dict)
    settings_changed: list[str] = field(default_factory=list)

    @property
    def needs_restart(self) -> bool:
        """Whether the hub process must restart (its servers keep running)."""
        return bool(self.settings_changed)

    @property
    def live(self) -> bool:
        """Whether there are user or group changes to make through the API."""
        return any(
            (
                self.users_added,
                self.users_removed,
                self.admins_added,
                self.admins_removed,
                self.groups_added,
                self.groups_removed,
                self.members_added,
                self.members_removed,
            )
        )

    def lines(self) -> list[str]:
        """Human-readable lines describing the change."""
        if self.kind in ("added", "removed", "unchanged"):
            return [f"{self.kind}"]
        out = []
        if "backend" in self.settings_changed:
            out.append(
                f"settings changed ({', '.join(self.settings_changed)}): "
                "the hub and its servers stop, then it starts on its new backend"
            )
        elif self.settings_changed:
            out.append(f"settings changed ({', '.join(self.settings_changed)}): hub restarts, servers keep running")
        for label, names in (
            ("users added", self.users_added),
            ("users removed", self.users_removed),
            ("admins added", self.admins_added),
            ("admins removed", self.admins_removed),
            ("groups added", self.groups_added),
            ("groups removed", self.groups_removed),
        ):
            if names:
                out.append(f"{label}: {', '.join(names)}")
        for group, names in self.members_added.items():
            out.append(f"group {group}: + {', '.join(names)}")
        for group, names in self.members_removed.items():
            out.append(f"group {group}: - {', '.join(names)}")
        return out

    def to_dict(self) -> dict[str, Any]:
        data = {k: v for k, v in self.__dict__.items() if v}
        data["name"], data["kind"] = self.name, self.kind
        data["needs_restart"] = self.needs_restart
        return data


@dataclass
class FleetPlan:
    """Every hub's change, plus fleet-level settings that apply cannot change in place."""

    hubs: list[HubChange]
    fleet_changed: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.fleet_changed and all(h.kind == "unchanged" for h in self.hubs)

    def to_dict(self) -> dict[str, Any]:
        return {"fleet_changed": self.fleet_changed, "hubs": [h.to_dict() for h in self.hubs]}


def plan(current: Fleet | None, desired: Fleet) -> FleetPlan:
    """The changes that turn the `current` fleet (None: nothing running) into the `desired` one."""
    if current is None:
        return FleetPlan([HubChange(name, "added") for name in desired.hubs])
    fleet_changed = [f for f in FLEET_FIELDS_NEEDING_RESTART if getattr(current, f) != getattr(desired, f)]
    changes = []
    for name in sorted(set(current.hubs) | set(desired.hubs)):
        if name not in desired.hubs:
            changes.append(HubChange(name, "removed"))
        elif name not in current.hubs:
            changes.append(HubChange(name, "added"))
        else:
            changes.append(diff_hub(current.hubs[name], desired.hubs[name]))
    return FleetPlan(changes, fleet_changed)


def diff_hub(old: Hub, new: Hub) -> HubChange:
    """How hub `old` becomes `new`."""
    change = HubChange(old.name, "changed")
    change.users_added = sorted(new.users - old.users)
    change.users_removed = sorted(old.users - new.users)
    change.admins_added = sorted(set(new.auth.admins) - set(old.auth.admins))
    change.admins_removed = sorted(set(old.auth.admins) - set(new.auth.admins))
    # A course's members are its groups' members: only those the file names change (not those added at run time).
    old_groups = {**old.groups, **fleet_file_groups(old.courses)}
    new_groups = {**new.groups, **fleet_file_groups(new.courses)}
    change.groups_added = sorted(set(new_groups) - set(old_groups))
    change.groups_removed = sorted(set(old_groups) - set(new_groups))
    for group, members in new_groups.items():
        before = set(old_groups.get(group, []))
        if added := sorted(set(members) - before):
            change.members_added[group] = added
        if group in old_groups and (removed := sorted(before - set(members))):
            change.members_removed[group] = removed
    old_data, new_data = old.model_dump(), new.model_dump()
    for key in old_data:
        if key == "groups":
            continue
        before, after = old_data[key], new_data[key]
        if key == "auth" and before["type"] == after["type"]:
            before = {k: v for k, v in before.items() if k not in AUTH_MEMBERSHIP}
            after = {k: v for k, v in after.items() if k not in AUTH_MEMBERSHIP}
        if key == "environments":  # new versions reach new servers without a restart; only what the form shows
            before = {name: (env["display_name"], env["description"]) for name, env in before.items()}
            after = {name: (env["display_name"], env["description"]) for name, env in after.items()}
        if key == "courses":
            before = [{k: v for k, v in course.items() if k not in COURSE_MEMBER_LISTS} for course in before]
            after = [{k: v for k, v in course.items() if k not in COURSE_MEMBER_LISTS} for course in after]
        if before != after:
            change.settings_changed.append(key)
    if not change.live and not change.needs_restart:
        change.kind = "unchanged"
    return change
