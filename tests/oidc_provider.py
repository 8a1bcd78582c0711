"""A small OpenID Connect provider on loopback, built on authlib's authorization server (authorization code flow with
PKCE, client_secret_basic/post, RS256 id_tokens, discovery, JWKS, userinfo). It stands in for a campus identity
provider (Keycloak, Azure AD, Okta…), which is out of this machine's reach: people log in on its own form, and their
`groups` claim comes from `Person.groups`, which a test may change between logins."""

from __future__ import annotations

import asyncio
import hmac
import html
import json
import os
import secrets
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field

from authlib.oauth2.rfc6749 import AuthorizationServer, ClientMixin, OAuth2Payload, OAuth2Request
from authlib.oauth2.rfc6749.errors import OAuth2Error
from authlib.oauth2.rfc6749.grants import AuthorizationCodeGrant
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oidc.core import UserInfo
from authlib.oidc.core.grants import OpenIDCode
from authlib.oidc.core.models import AuthorizationCodeMixin
from joserfc.jwk import RSAKey
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.httputil import HTTPServerRequest

from tests.helpers import free_port, wait_until

os.environ.setdefault("AUTHLIB_INSECURE_TRANSPORT", "1")  # http on loopback only: authlib refuses it otherwise


@dataclass
class Person:
    username: str
    password: str
    groups: list[str] = field(default_factory=list)

    def claims(self) -> dict:
        return {
            "sub": f"id-{self.username}",
            "preferred_username": self.username,
            "email": f"{self.username}@campus.example.edu",
            "name": self.username.title(),
            "groups": list(self.groups),
        }


@dataclass
class Client(ClientMixin):
    client_id: str
    client_secret: str
    redirect_uris: list[str]

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str:
        return self.redirect_uris[0]

    def get_allowed_scope(self, scope: str) -> str:
        return " ".join(s for s in scope.split() if s in ("openid", "profile", "email", "groups"))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret, self.client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type == "authorization_code"


@dataclass
class Code(AuthorizationCodeMixin):
    code: str
    client_id: str
    redirect_uri: str
    scope: str
    user: Person
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    auth_time: int = field(default_factory=lambda: int(time.time()))

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope

    def get_nonce(self) -> str | None:
        return self.nonce

    def get_auth_time(self) -> int:
        return self.auth_time

    def get_acr(self) -> None:
        return None

    def get_amr(self) -> None:
        return None


class _Payload(OAuth2Payload):
    def __init__(self, request: HTTPServerRequest):
        values: dict[str, list[str]] = defaultdict(list)
        for source in (request.query_arguments, request.body_arguments):
            for name, items in source.items():
                values[name].extend(item.decode() for item in items)
        self._values = values

    @property
    def data(self) -> dict[str, str]:
        return {name: items[0] for name, items in self._values.items()}

    @property
    def datalist(self) -> defaultdict[str, list]:
        return defaultdict(list, self._values)


class _Request(OAuth2Request):
    def __init__(self, request: HTTPServerRequest):
        super().__init__(request.method or "GET", request.full_url(), headers=dict(request.headers))
        self.payload = _Payload(request)
        self._request = request

    @property
    def args(self) -> dict[str, str]:
        return {k: v[0].decode() for k, v in self._request.query_arguments.items()}

    @property
    def form(self) -> dict[str, str]:
        return {k: v[0].decode() for k, v in self._request.body_arguments.items()}


class Provider(AuthorizationServer):
    """authlib's authorization server over tornado requests, with its clients, codes and tokens in memory."""

    def __init__(self, issuer: str) -> None:
        super().__init__(scopes_supported=["openid", "profile", "email", "groups"])
        self.issuer = issuer
        self.key = RSAKey.generate_key(2048, parameters={"kid": "test-key", "use": "sig", "alg": "RS256"})
        self.clients: dict[str, Client] = {}
        self.people: dict[str, Person] = {}
        self.codes: dict[str, Code] = {}
        self.tokens: dict[str, Person] = {}
        provider = self

        class CodeGrant(AuthorizationCodeGrant):
            TOKEN_ENDPOINT_AUTH_METHODS = ["client_secret_basic", "client_secret_post"]

            def save_authorization_code(self, code: str, request: OAuth2Request) -> None:
                data = request.payload.data
                provider.codes[code] = Code(
                    code=code,
                    client_id=request.client.get_client_id(),
                    redirect_uri=data.get("redirect_uri", ""),
                    scope=request.payload.scope or "",
                    user=request.user,
                    nonce=data.get("nonce"),
                    code_challenge=data.get("code_challenge"),
                    code_challenge_method=data.get("code_challenge_method"),
                )

            def query_authorization_code(self, code: str, client: Client) -> Code | None:
                found = provider.codes.get(code)
                return found if found is not None and found.client_id == client.client_id else None

            def delete_authorization_code(self, authorization_code: Code) -> None:
                provider.codes.pop(authorization_code.code, None)

            def authenticate_user(self, authorization_code: Code) -> Person:
                return authorization_code.user

        class IDToken(OpenIDCode):
            def resolve_client_private_key(self, client: Client) -> RSAKey:
                return provider.key

            def get_client_algorithm(self, client: Client) -> str:
                return "RS256"

            def get_encode_header(self, client: Client) -> dict:
                return {"alg": "RS256", "kid": "test-key"}

            def get_client_claims(self, client: Client) -> dict:
                return {"iss": provider.issuer, "aud": [client.client_id], "exp": int(time.time()) + 300}

            def exists_nonce(self, nonce: str, request: OAuth2Request) -> bool:
                return False

            def generate_user_info(self, user: Person, scope: str) -> UserInfo:
                return UserInfo(user.claims())

        self.register_token_generator(
            "default", BearerTokenGenerator(lambda client, grant_type, user, scope: secrets.token_urlsafe(32))
        )
        self.register_grant(CodeGrant, [IDToken(require_nonce=False), CodeChallenge(required=True)])

    def query_client(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)

    def save_token(self, token: dict, request: OAuth2Request) -> None:
        self.tokens[token["access_token"]] = request.user

    def create_oauth2_request(self, request: HTTPServerRequest) -> OAuth2Request:
        return _Request(request)

    def handle_response(self, status: int, body: object, headers: list[tuple[str, str]]) -> tuple:
        return status, body, headers

    def send_signal(self, name: str, *args: object, **kwargs: object) -> None:
        return None

    def discovery(self) -> dict:
        return {
            "issuer": self.issuer,
            "authorization_endpoint": f"{self.issuer}/authorize",
            "token_endpoint": f"{self.issuer}/token",
            "userinfo_endpoint": f"{self.issuer}/userinfo",
            "jwks_uri": f"{self.issuer}/jwks",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        }


class _Handler(web.RequestHandler):
    def initialize(self, provider: Provider) -> None:
        self.provider = provider

    def answer(self, result: tuple) -> None:
        status, body, headers = result
        self.set_status(status)
        for name, value in headers:
            self.set_header(name, value)
        self.finish(body if isinstance(body, str | bytes) else json.dumps(body))


class DiscoveryHandler(_Handler):
    def get(self) -> None:
        self.finish(self.provider.discovery())


class JWKSHandler(_Handler):
    def get(self) -> None:
        self.finish({"keys": [self.provider.key.as_dict(private=False)]})


class AuthorizeHandler(_Handler):
    FORM = (
        "<form method=post><input name=username id=username><input name=password id=password type=password>"
        "<button id=submit>Sign in</button></form>"
    )

    def get(self) -> None:
        try:
            self.provider.get_consent_grant(self.request)
        except OAuth2Error as error:
            self.set_status(400)
            self.finish(html.escape(error.description or error.error))
            return
        self.finish(f"<h1>Campus sign-in</h1>{self.FORM}")

    def post(self) -> None:
        person = self.provider.people.get(self.get_body_argument("username", ""))
        if person is None or not hmac.compare_digest(person.password, self.get_body_argument("password", "")):
            self.set_status(401)
            self.finish(f"<p>wrong user name or password</p>{self.FORM}")
            return
        self.answer(self.provider.create_authorization_response(self.request, grant_user=person))


class TokenHandler(_Handler):
    def post(self) -> None:
        self.answer(self.provider.create_token_response(self.request))


class UserInfoHandler(_Handler):
    def get(self) -> None:
        token = self.request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
        person = self.provider.tokens.get(token)
        if person is None:
            self.set_status(401)
            self.finish({"error": "invalid_token"})
            return
        self.finish(person.claims())


@dataclass
class RunningProvider:
    provider: Provider
    issuer: str

    def register(self, redirect_uri: str) -> Client:
        client = Client(f"hub-{secrets.token_hex(4)}", secrets.token_urlsafe(24), [redirect_uri])
        self.provider.clients[client.client_id] = client
        return client

    def add(self, person: Person) -> Person:
        self.provider.people[person.username] = person
        return person


class provider_on_loopback:
    """Serve a `Provider` on 127.0.0.1 from a thread of its own (its own event loop)."""

    def __enter__(self) -> RunningProvider:
        port = free_port()
        self.provider = Provider(f"http://127.0.0.1:{port}")
        app = web.Application(
            [
                (r"/\.well-known/openid-configuration", DiscoveryHandler, {"provider": self.provider}),
                (r"/jwks", JWKSHandler, {"provider": self.provider}),
                (r"/authorize", AuthorizeHandler, {"provider": self.provider}),
                (r"/token", TokenHandler, {"provider": self.provider}),
                (r"/userinfo", UserInfoHandler, {"provider": self.provider}),
            ]
        )
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def serve() -> None:
            asyncio.set_event_loop(self.loop)
            self.server = HTTPServer(app)
            self.server.listen(port, "127.0.0.1")
            ready.set()
            self.loop.run_forever()

        self.thread = threading.Thread(target=serve, daemon=True)
        self.thread.start()
        wait_until(ready.is_set, 10, "the OpenID provider to listen")
        return RunningProvider(self.provider, self.provider.issuer)

    def __exit__(self, *_: object) -> None:
        self.loop.call_soon_threadsafe(self.server.stop)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
