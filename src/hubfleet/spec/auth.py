"""How users log in to a hub (`auth:`, chosen by `type:`): shared password, native sign-up, GitHub, and campus
sign-on — any OpenID Connect provider, CILogon, LDAP / Active Directory — whose directory groups can decide who comes
in, who administers, and which hub groups (and so courses and profiles) people are in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator, model_validator

from hubfleet.spec.base import Slug, SpecModel, Username


class AuthBase(SpecModel):
    """Who may log in and who administers the hub."""

    admins: list[Username] = Field(default_factory=list, description="hub administrators")
    allowed_users: list[Username] = Field(
        default_factory=list, description="users allowed in (members of any group are allowed too)"
    )
    allow_all: bool = Field(False, description="let anyone who can authenticate in")


def secret_value(inline: SecretStr | None, file: Path | None) -> str:
    """A secret given inline or in a file (stripped); "" when the file cannot be read."""
    if inline is not None:
        return inline.get_secret_value()
    try:
        return file.read_text(encoding="utf-8").strip() if file is not None else ""
    except (OSError, UnicodeDecodeError):
        return ""


SECRET_FILE_FIELDS = ("password_file", "client_secret_file", "bind_password_file")
"""Fields of auth settings that name a file holding a secret (relative to the fleet file; must be readable)."""


class SharedPasswordAuth(AuthBase):
    """One shared password (demos, workshops)."""

    type: Literal["shared-password"]
    password: SecretStr | None = Field(None, description="the shared password (at least 8 characters)")
    password_file: Path | None = Field(None, description="file holding the shared password")
    admin_password: SecretStr | None = Field(
        None,
        description="the password `admins` log in with (at least 32 characters, as JupyterHub requires; without it, "
        "admins cannot log in)",
    )

    @field_validator("password")
    @classmethod
    def _long_enough(cls, password: SecretStr | None) -> SecretStr | None:
        if password is not None and len(password.get_secret_value()) < 8:
            raise ValueError("the shared password must be at least 8 characters")
        return password

    @field_validator("admin_password")
    @classmethod
    def _admin_long_enough(cls, password: SecretStr | None) -> SecretStr | None:
        if password is not None and len(password.get_secret_value()) < 32:
            raise ValueError("the admin password must be at least 32 characters (JupyterHub's minimum)")
        return password

    @model_validator(mode="after")
    def _one_source(self) -> SharedPasswordAuth:
        if (self.password is None) == (self.password_file is None):
            raise ValueError("give exactly one of password or password_file")
        if self.admin_password is not None and self.admin_password == self.password:
            raise ValueError("the admin password must differ from the shared password")
        return self

    def shared_password(self) -> str:
        """The password, inline or from its file."""
        return secret_value(self.password, self.password_file)


class NativeAuth(AuthBase):
    """Users sign up with a password an admin approves (jupyterhub-nativeauthenticator)."""

    type: Literal["native"]
    open_signup: bool = Field(False, description="new sign-ups are authorized without an admin")
    minimum_password_length: int = Field(8, ge=1, description="shortest password users may sign up with")


class OAuthClient(AuthBase):
    """A hub that is an OAuth client of an identity provider: its client ID and secret."""

    client_id: str = Field(description="the OAuth client ID the provider gave the hub")
    client_secret: SecretStr | None = Field(None, description="the OAuth client secret")
    client_secret_file: Path | None = Field(None, description="file holding the client secret")

    @model_validator(mode="after")
    def _one_source(self) -> OAuthClient:
        if (self.client_secret is None) == (self.client_secret_file is None):
            raise ValueError("give exactly one of client_secret or client_secret_file")
        return self

    def secret(self) -> str:
        """The client secret, inline or from its file."""
        return secret_value(self.client_secret, self.client_secret_file)


class GitHubAuth(OAuthClient):
    """Log in with GitHub (oauthenticator)."""

    type: Literal["github"]
    allowed_organizations: list[str] = Field(
        default_factory=list, description="members of these GitHub organizations are allowed in"
    )


class DirectoryGroups(SpecModel):
    """What the campus directory's groups decide on a hub (the same for OpenID Connect, CILogon and LDAP)."""

    group_map: dict[str, Slug | list[Slug]] = Field(
        default_factory=dict,
        description="directory group → hub group(s) (the hub's `groups:` or a course's `<course>-students`, "
        "`-tas`, `-instructors`): at every login the person's membership of these hub groups follows the "
        "directory, so courses, profiles and shared folders follow it too; members of a mapped directory group may "
        "log in",
    )
    allowed_groups: list[str] = Field(
        default_factory=list, description="directory groups whose members may log in (besides `allowed_users`)"
    )
    admin_groups: list[str] = Field(
        default_factory=list, description="directory groups whose members are the hub's administrators"
    )

    def mapped(self) -> dict[str, list[str]]:
        """Directory group → the hub groups it maps to (always a list)."""
        return {group: [hub] if isinstance(hub, str) else list(hub) for group, hub in self.group_map.items()}


class OIDCAuth(OAuthClient, DirectoryGroups):
    """Log in with any OpenID Connect provider: Keycloak, Azure AD / Entra ID, Google, Okta, Shibboleth's OP…
    (oauthenticator's GenericOAuthenticator; the endpoints come from the provider's discovery document)."""

    type: Literal["oidc"]
    issuer: AnyHttpUrl = Field(
        description="the provider's issuer URL: its endpoints are read from `<issuer>/.well-known/openid-"
        "configuration` when the hub starts"
    )
    display_name: str = Field("your institution", description="shown on the login button: 'Sign in with …'")
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "profile", "email"], description="scopes the hub asks for"
    )
    username_claim: str = Field(
        "preferred_username", description="the claim that becomes the JupyterHub user name (e.g. `email`, `sub`)"
    )
    groups_claim: str = Field(
        "groups", description="the claim listing the person's directory groups (dotted for nested, e.g. `realm.roles`)"
    )

    @field_validator("scopes")
    @classmethod
    def _openid(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("OpenID Connect needs the `openid` scope")
        return scopes


class CILogonIdP(SpecModel):
    """One identity provider people may choose at CILogon, and how their user name is made."""

    username_claim: str = Field(
        "email", description="the CILogon claim that becomes the user name (e.g. `email`, `eppn`, `oidc`)"
    )
    strip_domain: str | None = Field(
        None, description="remove `@<this domain>` from the user name (e.g. `example.edu`: ada@example.edu → ada)"
    )
    allow_all: bool = Field(False, description="let everyone from this identity provider in")
    allowed_domains: list[str] = Field(
        default_factory=list, description="let in people whose user name claim ends in @ one of these domains"
    )


class CILogonAuth(OAuthClient, DirectoryGroups):
    """Log in through CILogon, the research and education federation (oauthenticator's CILogonOAuthenticator)."""

    type: Literal["cilogon"]
    allowed_idps: dict[str, CILogonIdP] = Field(
        min_length=1,
        description="identity providers offered at CILogon, by entity ID (e.g. `urn:mace:incommon:example.edu`; "
        "`https://github.com/login/oauth/authorize`)",
    )
    scopes: list[str] = Field(
        default_factory=lambda: ["openid", "email", "org.cilogon.userinfo"], description="scopes the hub asks for"
    )
    groups_claim: str = Field("isMemberOf", description="the claim listing the person's groups")
    host: str = Field("cilogon.org", description="CILogon's host (`test.cilogon.org` for its test instance)")

    @field_validator("scopes")
    @classmethod
    def _openid(cls, scopes: list[str]) -> list[str]:
        if "openid" not in scopes:
            raise ValueError("CILogon needs the `openid` scope")
        return scopes


class LDAPAuth(AuthBase, DirectoryGroups):
    """Log in with a campus LDAP or Active Directory account (jupyterhub-ldapauthenticator). Groups are LDAP group
    DNs (`cn=phys101,ou=groups,dc=example,dc=edu`)."""

    type: Literal["ldap"]
    server: str = Field(description="the LDAP server's host name or address")
    port: int | None = Field(None, ge=1, le=65535, description="its port (default 389, or 636 with `tls: ldaps`)")
    tls: Literal["starttls", "ldaps", "insecure"] = Field(
        "starttls",
        description="`starttls` (upgrade before sending the password), `ldaps` (TLS from the start, port 636) or "
        "`insecure` (no TLS: only for a server on this machine)",
    )
    ca_file: Path | None = Field(None, description="CA certificates to verify the server with (default: the system's)")
    bind_dn_template: list[str] = Field(
        default_factory=list,
        description="DNs to bind as, `{username}` standing for the login name (e.g. "
        "`uid={username},ou=people,dc=example,dc=edu`); leave empty to look the DN up (`user_search_base`)",
    )
    user_search_base: str | None = Field(
        None, description="where to look a person's DN up (Active Directory: e.g. `ou=people,dc=example,dc=edu`)"
    )
    user_attribute: str = Field(
        "uid", description="the attribute holding the login name (Active Directory: `sAMAccountName`)"
    )
    bind_dn: str | None = Field(None, description="the account that looks DNs up (none: an anonymous search)")
    bind_password_file: Path | None = Field(None, description="file holding that account's password")

    @model_validator(mode="after")
    def _one_way_to_the_dn(self) -> LDAPAuth:
        if not self.bind_dn_template and self.user_search_base is None:
            raise ValueError("give bind_dn_template or user_search_base (to look people's DNs up)")
        if (self.bind_dn is None) != (self.bind_password_file is None):
            raise ValueError("give bind_dn and bind_password_file together")
        for template in self.bind_dn_template:
            if "{username}" not in template:
                raise ValueError(f"bind_dn_template {template!r} has no {{username}}")
        return self

    @property
    def lookup(self) -> bool:
        """Whether people's DNs are looked up (rather than made from a template)."""
        return not self.bind_dn_template


DIRECTORY_AUTH = (OIDCAuth, CILogonAuth, LDAPAuth)
"""The sign-on types whose directory groups map to hub groups."""

Auth = Annotated[
    SharedPasswordAuth | NativeAuth | GitHubAuth | OIDCAuth | CILogonAuth | LDAPAuth, Field(discriminator="type")
]
