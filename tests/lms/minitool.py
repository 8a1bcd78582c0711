"""A tiny LTI 1.3 tool for testing the peer LMS without a hub: login initiation, launch, and its own JWKS."""

from __future__ import annotations

import json
import secrets
import time
import typing as t
from urllib.parse import urlencode

import tornado.httpclient
import tornado.web
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet, RSAKey

from tests.lms.peer import CLIENT_ASSERTION_TYPE, LoopbackServer, PeerLMS


class MiniTool:
    """The tool side of a launch, minimal but checking what a tool must (signature by kid, iss, aud, nonce, state).

    `redirect_uri` may be changed to make the tool send a wrong one (negative tests)."""

    def __init__(self, lms: PeerLMS):
        self.lms = lms
        self.key = RSAKey.generate_key(2048, parameters={"alg": "RS256", "use": "sig"})
        self.key.ensure_kid()
        self._states: dict[str, str] = {}  # state -> nonce
        self._server = LoopbackServer(
            tornado.web.Application(
                [
                    (r"/jwks", _ToolJWKS, {"tool": self}),
                    (r"/login", _ToolLogin, {"tool": self}),
                    (r"/launch", _ToolLaunch, {"tool": self}),
                ]
            )
        )
        self.url = self._server.url
        self.redirect_uri = f"{self.url}/launch"

    def __enter__(self) -> MiniTool:
        self._server.start()
        self.lms.set_tool(login_url=f"{self.url}/login", launch_url=f"{self.url}/launch", jwks_url=f"{self.url}/jwks")
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.stop()

    def assertion(self, **overrides: t.Any) -> str:
        """A client-credentials assertion (RFC 7523) signed with the tool key; `overrides` replace claims
        (None removes one); `key=` signs with another key."""
        now = int(time.time())
        claims: dict[str, t.Any] = {
            "iss": self.lms.client_id,
            "sub": self.lms.client_id,
            "aud": self.lms.token_url,
            "iat": now,
            "exp": now + 300,
            "jti": secrets.token_urlsafe(12),
        }
        key = overrides.pop("key", self.key)
        claims.update(overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        return jwt.encode({"alg": "RS256", "kid": key.kid}, claims, key)

    def token_form(self, scope: str, **overrides: t.Any) -> dict[str, str]:
        return {
            "grant_type": "client_credentials",
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.assertion(**overrides),
            "scope": scope,
        }


class _ToolHandler(tornado.web.RequestHandler):
    def initialize(self, tool: MiniTool) -> None:
        self.tool = tool

    def check_xsrf_cookie(self) -> None:
        """Cross-site form posts are the point of LTI."""


class _ToolJWKS(_ToolHandler):
    def get(self) -> None:
        self.finish(KeySet([self.tool.key]).as_dict(private=False))


class _ToolLogin(_ToolHandler):
    def _handle(self) -> None:
        args = self.request.query_arguments if self.request.method == "GET" else self.request.body_arguments
        params = {k: v[-1].decode() for k, v in args.items()}
        if params.get("iss") != self.tool.lms.issuer:
            raise tornado.web.HTTPError(400, "unknown issuer")
        state, nonce = secrets.token_urlsafe(16), secrets.token_urlsafe(16)
        self.tool._states[state] = nonce
        query = {
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": params.get("client_id", ""),
            "redirect_uri": self.tool.redirect_uri,
            "login_hint": params.get("login_hint", ""),
            "lti_message_hint": params.get("lti_message_hint", ""),
            "state": state,
            "nonce": nonce,
        }
        self.redirect(f"{self.tool.lms.auth_login_url}?{urlencode(query)}")

    get = post = _handle


class _ToolLaunch(_ToolHandler):
    async def post(self) -> None:
        nonce = self.tool._states.pop(self.get_body_argument("state", ""), None)
        if nonce is None:
            raise tornado.web.HTTPError(400, "unknown state")
        fetched = await tornado.httpclient.AsyncHTTPClient().fetch(self.tool.lms.jwks_url)
        try:
            token = jwt.decode(self.get_body_argument("id_token", ""), KeySet.import_key_set(json.loads(fetched.body)))
            jwt.JWTClaimsRegistry(
                iss={"essential": True, "value": self.tool.lms.issuer},
                aud={"essential": True, "value": self.tool.lms.client_id},
                nonce={"essential": True, "value": nonce},
                exp={"essential": True},
            ).validate(token.claims)
        except JoseError as error:
            self.set_status(401)
            self.finish({"error": f"id_token rejected: {error}"})
            return
        self.finish({"header": token.header, "claims": token.claims})
