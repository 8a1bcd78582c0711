"""A small client for one hub's JupyterHub REST API, authenticated as the fleet's service."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from collections.abc import AsyncIterator, Container, Iterable
from typing import Any

import httpx

PAGINATION = "application/jupyterhub-pagination+json"
NO_SERVER = (400, 404)
"""What the hub answers to stopping a server that is not running, or that a user does not have."""


class HubAPI:
    """The JupyterHub REST API of one hub (`api_url` ends with `/hub/api`)."""

    def __init__(self, api_url: str, token: str, *, timeout: float = 30.0):
        self.api_url = api_url.rstrip("/")
        self._client = httpx.AsyncClient(
            base_url=self.api_url, headers={"Authorization": f"token {token}"}, timeout=timeout
        )

    async def __aenter__(self) -> HubAPI:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()

    async def request(self, method: str, path: str, *, allow: Container[int] = (), **kwargs: Any) -> httpx.Response:
        """A request that must succeed or answer one of the statuses in `allow` (raises httpx.HTTPStatusError
        otherwise)."""
        response = await self._client.request(method, path, **kwargs)
        if response.status_code not in allow:
            response.raise_for_status()
        return response

    async def _model(self, path: str) -> dict | None:
        """The model at `path`, None if there is none."""
        response = await self.request("GET", path, allow=(404,))
        return None if response.status_code == 404 else response.json()

    async def alive(self) -> bool:
        """Whether the hub answers its API."""
        try:
            response = await self._client.get("/")
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _paged(self, path: str, params: dict[str, Any] | None = None) -> AsyncIterator[dict]:
        """Every item of a paginated list, page by page."""
        offset = 0
        while True:
            query = {**(params or {}), "offset": offset, "limit": 200}
            page = (await self.request("GET", path, params=query, headers={"Accept": PAGINATION})).json()
            for item in page["items"]:
                yield item
            following = page["_pagination"].get("next")
            if not following:
                return
            offset = following["offset"]

    def users(self, state: str | None = None) -> AsyncIterator[dict]:
        """Every user (optionally only those with `state` active/ready/inactive), page by page."""
        return self._paged("/users", {"state": state} if state else None)

    async def groups(self) -> list[dict]:
        """Every group, with its members and properties."""
        return [group async for group in self._paged("/groups")]

    async def count_users(self, state: str | None = None) -> int:
        params: dict[str, Any] = {"limit": 1}
        if state:
            params["state"] = state
        page = (await self.request("GET", "/users", params=params, headers={"Accept": PAGINATION})).json()
        return int(page["_pagination"]["total"])

    async def user(self, name: str) -> dict | None:
        return await self._model(f"/users/{name}")

    async def create_users(self, names: Iterable[str], admin: bool = False) -> None:
        names = sorted(names)
        if names:
            await self.request("POST", "/users", json={"usernames": names, "admin": admin})

    async def ensure_users(self, names: Iterable[str]) -> None:
        """Create those of `names` that do not exist yet (the others are left as they are)."""
        names = sorted(names)
        if names:
            await self.request("POST", "/users", json={"usernames": names}, allow=(409,))  # 409: all exist already

    async def set_admin(self, name: str, admin: bool) -> None:
        await self.request("PATCH", f"/users/{name}", json={"admin": admin})

    async def delete_user(self, name: str) -> None:
        await self.request("DELETE", f"/users/{name}", allow=(404,))

    async def ensure_group(self, name: str) -> None:
        await self.request("POST", f"/groups/{name}", allow=(409,))

    async def group(self, name: str) -> dict | None:
        """The group model (`users`, `properties`, …), None if there is no such group."""
        return await self._model(f"/groups/{name}")

    async def delete_group(self, name: str) -> None:
        await self.request("DELETE", f"/groups/{name}", allow=(404,))

    async def add_members(self, group: str, users: Iterable[str]) -> None:
        users = sorted(users)
        if users:
            await self.request("POST", f"/groups/{group}/users", json={"users": users})

    async def remove_members(self, group: str, users: Iterable[str]) -> None:
        users = sorted(users)
        if users:
            await self.request("DELETE", f"/groups/{group}/users", json={"users": users})

    async def start_server(self, user: str) -> None:
        """Ask the hub to start `user`'s default server (with its default options); returns once the hub took it."""
        await self.request("POST", f"/users/{user}/server")

    async def stop_server(self, user: str) -> None:
        """Ask the hub to stop `user`'s default server (nothing if it has none)."""
        await self.request("DELETE", f"/users/{user}/server", allow=NO_SERVER)

    async def new_token(self, user: str, note: str, expires_in: int = 600) -> str:
        """A fresh API token for `user` (who is created if needed)."""
        if await self.user(user) is None:
            await self.create_users([user])
        body = {"note": note, "expires_in": expires_in}
        return (await self.request("POST", f"/users/{user}/tokens", json=body)).json()["token"]

    async def stop_all_servers(self, timeout: float = 90.0) -> int:
        """Stop every running or pending server and wait until they are gone. Returns how many there were."""
        targets: list[tuple[str, str]] = []
        async for user in self.users(state="active"):
            for server_name in user.get("servers", {}):
                targets.append((user["name"], server_name))

        async def stop(user: str, server: str) -> None:
            path = f"/users/{user}/servers/{server}" if server else f"/users/{user}/server"
            await self.request("DELETE", path, allow=NO_SERVER)

        await asyncio.gather(*(stop(u, s) for u, s in targets))
        deadline = time.monotonic() + timeout
        while targets and time.monotonic() < deadline:
            if await self.count_users(state="active") == 0:
                break
            await asyncio.sleep(0.25)
        return len(targets)


def timestamp(iso: str | None) -> float | None:
    """A JupyterHub or proxy time (ISO 8601, `Z` for UTC) as Unix time; None if there is none or it is not one."""
    if not iso:
        return None
    try:
        return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
