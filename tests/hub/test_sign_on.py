"""Campus sign-on through the front door, against real identity providers on loopback: an OpenID Connect provider
built on authlib (standing in for the campus IdP, which is out of reach) and a real OpenLDAP `slapd`. Directory
groups decide who comes in, who administers, and which hub groups — a course's students included — people are in;
at every login the mapped groups follow the directory and every other group is left as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from tests.directory import running_slapd
from tests.helpers import RunningFleet, running_fleet, unique_hub
from tests.oidc_provider import Person, provider_on_loopback

PASSWORD = "unused-shared-2026"


def user_model(fleet: RunningFleet, hub: str, name: str) -> dict:
    response = httpx.get(
        f"{fleet.hub_url(hub)}hub/api/users/{name}",
        headers={"Authorization": f"token {fleet.service_token(hub)}"},
        timeout=30,
    )
    response.raise_for_status()
    return response.json()


def add_to_group(fleet: RunningFleet, hub: str, group: str, name: str) -> None:
    httpx.post(
        f"{fleet.hub_url(hub)}hub/api/groups/{group}/users",
        json={"users": [name]},
        headers={"Authorization": f"token {fleet.service_token(hub)}"},
        timeout=30,
    ).raise_for_status()


async def oidc_login(fleet: RunningFleet, hub: str, username: str, password: str) -> httpx.Response:
    """A browser's way: the hub's login button → the provider's form → back to the hub's callback (its answer)."""
    async with httpx.AsyncClient(timeout=60) as client:
        form = await client.get(fleet.hub_url(hub) + "hub/oauth_login", follow_redirects=True)
        assert form.status_code == 200 and "Campus sign-in" in form.text, form.text
        back = await client.post(str(form.url), data={"username": username, "password": password})
        assert back.status_code == 302, back.text
        assert back.headers["location"].startswith(fleet.hub_url(hub) + "hub/oauth_callback")
        return await client.get(back.headers["location"])


@pytest.mark.needs("root", "cgroups", "acl", "user_env", "proxy")
def test_oidc_login_with_directory_groups(tmp_path: Path) -> None:
    hub = unique_hub("cpo")
    with provider_on_loopback() as idp:
        client = idp.register("http://127.0.0.1/set-once-the-fleet-runs")
        ada = idp.add(Person("ada", "ada-pass", ["physics-dept", "phys101-roster"]))
        idp.add(Person("bob", "bob-pass", ["other-dept"]))
        idp.add(Person("cleo", "cleo-pass", ["hub-admins"]))
        hubs = f"""
            {hub}:
              groups: {{physics: [], chem: [], extra: []}}
              courses: [{{name: phys101, folder: false}}]
              auth:
                type: oidc
                issuer: {idp.issuer}
                display_name: Example University
                client_id: {client.client_id}
                client_secret: {client.client_secret}
                group_map: {{physics-dept: physics, phys101-roster: phys101-students, chem-dept: chem}}
                admin_groups: [hub-admins]
            """
        with running_fleet(tmp_path, hubs, [hub], PASSWORD) as fleet:
            client.redirect_uris[0] = f"{fleet.hub_url(hub)}hub/oauth_callback"
            login_page = httpx.get(fleet.hub_url(hub) + "hub/login", timeout=30)
            assert "Sign in with Example University" in login_page.text

            landed = asyncio.run(oidc_login(fleet, hub, "ada", "ada-pass"))
            assert landed.status_code == 302, landed.text
            assert "jupyterhub-session-id" in landed.headers.get("set-cookie", "") or landed.cookies
            model = user_model(fleet, hub, "ada")
            assert set(model["groups"]) == {"physics", "phys101-students"}
            assert model["admin"] is False

            # The directory changes; a group the fleet manages elsewhere stays as it is.
            add_to_group(fleet, hub, "extra", "ada")
            ada.groups = ["physics-dept", "chem-dept"]
            assert asyncio.run(oidc_login(fleet, hub, "ada", "ada-pass")).status_code == 302
            assert set(user_model(fleet, hub, "ada")["groups"]) == {"physics", "chem", "extra"}

            # Not in any group the hub names: not let in. In the admin group: an admin.
            refused = asyncio.run(oidc_login(fleet, hub, "bob", "bob-pass"))
            assert refused.status_code == 403
            assert asyncio.run(oidc_login(fleet, hub, "cleo", "cleo-pass")).status_code == 302
            assert user_model(fleet, hub, "cleo")["admin"] is True
            assert (
                '"authenticator": "OIDCAuthenticator"' in (fleet.state_dir / "hubs" / hub / "logins.jsonl").read_text()
            )


async def form_login(fleet: RunningFleet, hub: str, username: str, password: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        await client.get(fleet.hub_url(hub) + "hub/login")
        return await client.post(
            fleet.hub_url(hub) + "hub/login",
            data={"username": username, "password": password, "_xsrf": client.cookies.get("_xsrf") or ""},
        )


@pytest.mark.needs("root", "cgroups", "acl", "user_env", "proxy", "slapd")
def test_ldap_login_with_directory_groups(tmp_path: Path) -> None:
    hub = unique_hub("cpl")
    with running_slapd(tmp_path / "slapd") as ldap:
        for uid in ("grace", "linus", "mallory"):
            ldap.add_person(uid, f"{uid}-pass")
        ldap.add_group("physics", ["grace"])
        ldap.add_group("phys101", ["grace"])
        ldap.add_group("staff", ["linus"])
        hubs = f"""
            {hub}:
              groups: {{physicists: [], extra: []}}
              courses: [{{name: phys101, folder: false}}]
              auth:
                type: ldap
                server: 127.0.0.1
                port: {ldap.port}
                tls: insecure
                bind_dn_template: ['uid={{username}},ou=people,dc=campus,dc=example']
                group_map:
                  '{ldap.group_dn("physics")}': physicists
                  '{ldap.group_dn("phys101")}': phys101-students
                admin_groups: ['{ldap.group_dn("staff")}']
            """
        with running_fleet(tmp_path / "fleet", hubs, [hub], PASSWORD) as fleet:
            assert asyncio.run(form_login(fleet, hub, "grace", "wrong")).status_code == 403
            assert asyncio.run(form_login(fleet, hub, "grace", "grace-pass")).status_code == 302
            assert set(user_model(fleet, hub, "grace")["groups"]) == {"physicists", "phys101-students"}
            # Dropped from the course in the directory: dropped from the course's students at the next login.
            add_to_group(fleet, hub, "extra", "grace")
            ldap.set_members("phys101", [])
            assert asyncio.run(form_login(fleet, hub, "grace", "grace-pass")).status_code == 302
            assert set(user_model(fleet, hub, "grace")["groups"]) == {"physicists", "extra"}
            # A directory account in no group the hub names is refused; the staff group administers.
            assert asyncio.run(form_login(fleet, hub, "mallory", "mallory-pass")).status_code == 403
            assert asyncio.run(form_login(fleet, hub, "linus", "linus-pass")).status_code == 302
            assert user_model(fleet, hub, "linus")["admin"] is True
