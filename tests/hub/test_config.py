"""From spec to JupyterHub configuration: what each hub process is told, for every kind of auth."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from traitlets.config import Config
from traitlets.utils.importstring import import_item

from hubfleet.backends.local.render import render_settings
from hubfleet.common.settings import CHECK_USER, HubSettings
from hubfleet.common.state import FleetState
from hubfleet.hub.config import configure
from hubfleet.spec import SpecError, parse
from tests.helpers import address_of

FLEET = """\
name: cfg
hubs:
  gh:
    auth:
      type: github
      client_id: abc123
      client_secret: very-secret-value
      allowed_organizations: [pangeo-data]
      admins: [octocat]
    groups: {{staff: [octocat, hubber]}}
  pw:
    auth: {{type: shared-password, password_file: {secret_file}, allowed_users: [ann]}}
  native:
    auth: {{type: native, admins: [nia], minimum_password_length: 12}}
"""


def render(tmp_path: Path, fleet_file: str, secret: str) -> dict[str, HubSettings]:
    """Each hub's settings for `fleet_file` (its `{secret_file}`: a file holding `secret`), written and read back as
    the hub reads them."""
    secret_file = tmp_path / "secret"
    secret_file.write_text(f"{secret}\n")
    fleet = parse(fleet_file.format(secret_file=secret_file), tmp_path / "fleet.yaml")
    state = FleetState(tmp_path / "state").create()
    out = {}
    for name, hub in fleet.hubs.items():
        settings = render_settings(fleet, hub, state.hub(name).create(), address_of(hub))
        settings.write(state.hub(name).settings_file)
        out[name] = HubSettings.read(state.hub(name).settings_file)
    return out


@pytest.fixture
def rendered(tmp_path: Path) -> dict[str, HubSettings]:
    return render(tmp_path, FLEET, "from-a-file-42")


def _config(settings: HubSettings) -> Config:
    c = Config()
    configure(c, settings)
    return c


def test_secrets_are_files_not_settings(rendered: dict[str, HubSettings]) -> None:
    for settings in rendered.values():
        text = json.dumps(settings.model_dump(mode="json"))
        assert "very-secret-value" not in text and "from-a-file-42" not in text
        for path in settings.secrets.values():
            assert path.stat().st_mode & 0o777 == 0o600
    assert rendered["pw"].secret("shared_password") == "from-a-file-42"


def test_github_hub(rendered: dict[str, HubSettings]) -> None:
    c = _config(rendered["gh"])
    assert c.JupyterHub.authenticator_class == "hubfleet.hub.authenticators.github.GitHubAuthenticator"
    assert c.GitHubOAuthenticator.client_secret == "very-secret-value"
    assert c.GitHubOAuthenticator.oauth_callback_url == "http://127.0.0.1:8000/hubs/gh/hub/oauth_callback"
    assert c.GitHubOAuthenticator.allowed_organizations == {"pangeo-data"}
    assert c.Authenticator.admin_users == {"octocat"}
    assert c.Authenticator.allowed_users == {"octocat", "hubber", CHECK_USER}
    authenticator = import_item(c.JupyterHub.authenticator_class)(config=c)
    assert authenticator.client_id == "abc123" and authenticator.allowed_organizations == {"pangeo-data"}


def test_shared_password_and_native_hubs(rendered: dict[str, HubSettings]) -> None:
    c = _config(rendered["pw"])
    authenticator = import_item(c.JupyterHub.authenticator_class)(config=c)
    assert authenticator.user_password == "from-a-file-42"
    assert "ann" in authenticator.allowed_users and not authenticator.allow_all
    native = _config(rendered["native"])  # (nativeauthenticator needs the hub's database to be instantiated)
    assert native.JupyterHub.authenticator_class == "hubfleet.hub.authenticators.native.NativeAuthenticator"
    assert native.NativeAuthenticator.minimum_password_length == 12
    assert native.Authenticator.allow_all, "approval by nativeauthenticator is the gate, not JupyterHub's allow list"


def test_every_hub_keeps_servers_across_restarts_and_uses_the_fleets_proxy(rendered: dict[str, HubSettings]) -> None:
    for settings in rendered.values():
        c = _config(settings)
        assert c.JupyterHub.cleanup_servers is False
        assert c.ConfigurableHTTPProxy.should_start is False
        assert c.JupyterHub.bind_url.endswith(f"/hubs/{settings.hub}/")
        assert {s["name"] for s in c.JupyterHub.services} >= {"hubfleet"}


def test_scratch_reaches_the_spawner_only_on_hubs_with_scratch(tmp_path: Path) -> None:
    text = f"name: cfg\npaths: {{shared_root: {tmp_path / 'srv'}}}\nhubs:\n"
    text += "  s:\n    auth: {type: native}\n    storage: {scratch: {size: 1G}}\n  n:\n    auth: {type: native}\n"
    fleet = parse(text, tmp_path / "fleet.yaml")
    state = FleetState(tmp_path / "state").create()
    with_scratch, without = (
        render_settings(fleet, fleet.hubs[n], state.hub(n).create(), address_of(fleet.hubs[n])) for n in ("s", "n")
    )
    assert with_scratch.scratch_root == tmp_path / "srv" / "s" / "scratch"
    assert without.scratch_root is None
    assert _config(with_scratch).HubfleetSpawnerMixin.scratch_root == str(tmp_path / "srv" / "s" / "scratch")
    assert _config(without).HubfleetSpawnerMixin.scratch_root == ""


CAMPUS = """\
name: campus
hubs:
  ci:
    groups: {{hpc: []}}
    auth:
      type: cilogon
      client_id: cilogon:/client_id/abc
      client_secret_file: {secret_file}
      allowed_idps:
        'urn:mace:incommon:example.edu': {{username_claim: eppn, strip_domain: example.edu}}
        'https://github.com/login/oauth/authorize': {{username_claim: username, allow_all: true}}
      group_map: {{'CO:COU:hpc-users:members:active': hpc}}
  ld:
    auth:
      type: ldap
      server: ldap.example.edu
      tls: ldaps
      user_search_base: ou=people,dc=example,dc=edu
      user_attribute: sAMAccountName
      bind_dn: cn=hub,ou=services,dc=example,dc=edu
      bind_password_file: {secret_file}
      allowed_groups: ['cn=jupyter,ou=groups,dc=example,dc=edu']
"""


def test_cilogon_and_ldap_hubs(tmp_path: Path) -> None:
    """What a CILogon hub and an Active Directory hub are told (their logins need the real services; the OIDC and
    LDAP logins are tested end to end in test_sign_on.py)."""
    configs = {}
    for name, settings in render(tmp_path, CAMPUS, "directory-secret-77").items():
        assert "directory-secret-77" not in settings.model_dump_json()
        configs[name] = _config(settings)
    ci, ld = configs["ci"], configs["ld"]
    assert ci.JupyterHub.authenticator_class == "hubfleet.hub.authenticators.cilogon.CILogonAuthenticator"
    assert ci.OAuthenticator.client_secret == "directory-secret-77"
    assert ci.CILogonAuthenticator.allowed_idps["urn:mace:incommon:example.edu"] == {
        "username_derivation": {"username_claim": "eppn", "action": "strip_idp_domain", "domain": "example.edu"},
        "allow_all": False,
    }
    assert ci.ClaimGroupsMixin.groups_claim == "isMemberOf"
    assert ci.DirectoryGroupsMixin.group_map == {"CO:COU:hpc-users:members:active": ["hpc"]}
    import_item(ci.JupyterHub.authenticator_class)(config=ci)  # oauthenticator validates allowed_idps
    assert ld.LDAPAuthenticator.tls_strategy == "on_connect"
    assert ld.LDAPAuthenticator.lookup_dn is True
    assert ld.LDAPAuthenticator.lookup_dn_search_password == "directory-secret-77"
    assert ld.LDAPAuthenticator.allowed_groups == ["cn=jupyter,ou=groups,dc=example,dc=edu"]


def test_directory_groups_must_map_to_groups_of_the_hub(tmp_path: Path) -> None:
    text = CAMPUS.replace("hpc}}", "gpu}}").format(secret_file=tmp_path / "secret")
    (tmp_path / "secret").write_text("x")
    with pytest.raises(SpecError) as failure:
        parse(text, tmp_path / "fleet.yaml")
    assert "hubs.ci.auth.group_map.CO:COU:hpc-users:members:active: unknown group 'gpu'" in str(failure.value)
