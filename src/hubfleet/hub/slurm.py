"""Users' servers as Slurm jobs: batchspawner 1.3's `SlurmSpawner` with hubfleet's profiles and Unix accounts.

The hub (run as root) prepares the user's Unix account exactly like `IsolatedSpawner`, then submits a batch job
through `sudo -E -u <account> sbatch`: the job runs as that account, with the chosen profile's cores, memory,
partition and time limit. Inside the job `batchspawner-singleuser` picks a free port on the node, reports it to the
hub (`POST /hub/api/batchspawner`) and starts `jupyterhub-singleuser`.

Two things in batchspawner 1.3 are replaced here because they are unsafe on a shared hub:

* its API handler sets *any* attribute of the spawner named in the posted JSON (`exec_prefix`, `batch_query_cmd`
  …), and the job holds the token that may post there: a user could make the hub run commands as root. The
  handler is swapped for one that accepts only a port, only while the server is starting (`PortHandler`);
* `user_options` override the batch script's template variables (`memory`, `nprocs`, `partition`, `options` …),
  so a user could ask for more than their profile through the REST API: the script is rendered from the
  spawner's own settings only.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import pwd
import re
import shlex
from pathlib import Path
from typing import Any

import batchspawner
import batchspawner.api
from jupyterhub import apihandlers
from jupyterhub.apihandlers.base import APIHandler
from tornado import web
from traitlets import Dict, Unicode, default

from hubfleet.hub.spawner import HubfleetSpawnerMixin
from hubfleet.spec.models import Profile

PORT_ROUTE = r"/api/batchspawner"


class PortHandler(APIHandler):
    """Where a starting job reports the port its server listens on (authenticated by the server's own token)."""

    @web.authenticated
    def post(self) -> None:
        token = self.get_auth_token()
        spawners = getattr(self.current_user, "spawners", {})  # a service's token has none
        spawner = next((s for s in spawners.values() if token and s.api_token == token), None)
        if spawner is None:
            raise web.HTTPError(403, "this token belongs to no server of yours")
        if spawner.pending != "spawn":
            raise web.HTTPError(409, "the server is not starting")
        port = (self.get_json_body() or {}).get("port")
        if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
            raise web.HTTPError(400, "expected JSON with an integer 'port'")
        spawner.port = port
        self.set_status(201)
        self.finish(json.dumps({"message": "port recorded"}))


def _replace_batchspawner_handler() -> None:
    handlers = apihandlers.default_handlers
    handlers[:] = [h for h in handlers if h[1] is not batchspawner.api.BatchSpawnerAPIHandler]
    if not any(h[1] is PortHandler for h in handlers):
        handlers.append((PORT_ROUTE, PortHandler))


_replace_batchspawner_handler()


def slurm_time(seconds: int) -> str:
    """A Slurm time limit (`days-hours:minutes:seconds`) of at least one minute."""
    seconds = max(int(seconds), 60)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{days}-{hours:02d}:{minutes:02d}:{secs:02d}"


def job_resources(profile: Profile) -> dict[str, str]:
    """The profile as batchspawner's `req_*` values: whole cores (rounded up), memory in MiB, partition, time."""
    return {
        "req_nprocs": str(max(1, math.ceil(profile.cpu))),
        "req_memory": f"{math.ceil(profile.memory / 1024**2)}M",
        "req_partition": profile.partition or "",
        "req_runtime": slurm_time(profile.time_limit) if profile.time_limit else "",
    }


class SlurmSpawner(HubfleetSpawnerMixin, batchspawner.SlurmSpawner):
    """Each server is a Slurm job running as the user's own Unix account, sized by the chosen profile."""

    slurm_conf = Unicode("", config=True, help="slurm.conf for Slurm commands and jobs (empty: Slurm's default)")
    node_addresses = Dict(
        config=True,
        help="Slurm node name -> address the hub reaches that node at; other nodes: their NodeAddr (scontrol)",
    )

    @default("env_keep")
    def _default_env_keep(self) -> list[str]:
        # PATH is set by _add_env (and again in the job: sudo resets it); SLURM_CONF comes from `slurm_conf`.
        return ["JUPYTERHUB_SINGLEUSER_APP", "LANG", "LC_ALL"]

    @default("req_username")
    def _default_req_username(self) -> str:
        return self.unix_name

    @default("req_homedir")
    def _default_req_homedir(self) -> str:
        return str(Path(self.home_root) / self.unix_name)

    @default("exec_prefix")
    def _default_exec_prefix(self) -> str:
        # Slurm commands run as the user's account; -E keeps the job's environment (sudo still resets PATH).
        return "sudo -E -u {username}"

    @default("batchspawner_singleuser_cmd")
    def _default_singleuser_cmd(self) -> str:
        return str(Path(self.env_prefix) / "bin" / "batchspawner-singleuser")

    @default("startup_poll_interval")
    def _default_startup_poll_interval(self) -> float:
        return 0.2  # batchspawner's 0.5 s adds up to half a second to every start

    @default("req_prologue")
    def _default_prologue(self) -> str:
        return f"export PATH={shlex.quote(self._add_env({})['PATH'])}"

    def cmd_formatted_for_batch(self) -> str:
        return shlex.join([self.batchspawner_singleuser_cmd, *self.cmd, *self.get_args()])

    async def _get_batch_script(self, **subvars: Any) -> str:
        # Rendered from the spawner's own settings: batchspawner lets user_options override them.
        own = self.get_req_subvars()
        own["cmd"] = subvars["cmd"]
        return await super()._get_batch_script(**own)

    def user_env(self, env: dict[str, str]) -> dict[str, str]:
        entry = pwd.getpwnam(self.unix_name)
        env["USER"] = self.unix_name
        env["HOME"] = entry.pw_dir
        env["SHELL"] = entry.pw_shell or "/bin/bash"
        env = self._add_env(env)
        if self.slurm_conf:
            env["SLURM_CONF"] = self.slurm_conf
        return env

    async def run_command(self, cmd: str, input: str | None = None, env: dict[str, str] | None = None) -> str:
        if env is None and self.slurm_conf:
            env = {**os.environ, "SLURM_CONF": self.slurm_conf}
        return await super().run_command(cmd, input=input, env=env)

    async def start(self) -> Any:
        profile = self._apply_profile()
        for name, value in job_resources(profile).items():
            setattr(self, name, value)
        # From the profile's environment, chosen at this start (the traits' defaults would keep the first one's).
        self.batchspawner_singleuser_cmd = str(Path(self.server_prefix) / "bin" / "batchspawner-singleuser")
        self.req_prologue = self._default_prologue()
        await asyncio.get_running_loop().run_in_executor(None, self._prepare_account)
        node, port = await super().start()
        if not node:
            raise RuntimeError(f"cannot tell which node job {self.job_id} runs on (squeue said {self.job_status!r})")
        self.ip = await self.node_address(node)
        self.log.info("Server of %s: job %s on %s (%s:%s)", self.user.name, self.job_id, node, self.ip, port)
        await self.wait_until_ready(self.ip, port)
        return self.ip, port

    async def node_address(self, node: str) -> str:
        """Where the hub reaches Slurm node `node`: `node_addresses`, else the node's NodeAddr, else its name."""
        if node in self.node_addresses:
            return self.node_addresses[node]
        env = {**os.environ, **({"SLURM_CONF": self.slurm_conf} if self.slurm_conf else {})}
        try:
            process = await asyncio.create_subprocess_exec(
                "scontrol",
                "show",
                "node",
                "--oneliner",
                node,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.DEVNULL,
                env=env,
            )
            out, _ = await asyncio.wait_for(process.communicate(), timeout=10)
        except (OSError, TimeoutError) as exc:
            self.log.warning("scontrol show node %s failed (%s): using the node name as its address", node, exc)
            return node
        found = re.search(r"\bNodeAddr=(\S+)", out.decode(errors="replace"))
        return found.group(1) if found else node
