"""A real two-node Slurm cluster on this machine for tests: munged, slurmctld and two slurmd (node1, node2).

Both nodes are this host (`NodeAddr=127.0.0.1`, one slurmd per node name on its own port). Every path of the
cluster (configuration, state, spool, pid and log files) is in a private folder, so the cluster neither needs nor
touches /etc/slurm. The folder is world-readable: jobs run as hub users, and their `sbatch`/`squeue` and the
job's steps read `slurm.conf` as those users.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.helpers import free_port
from tests.requirements import need

NODES = ("node1", "node2")
PARTITION = "interactive"
NODE_CPUS = 2
NODE_MEMORY_MB = 4096
MUNGE_SOCKET_DIR = Path("/run/munge")
READY_SECONDS = 30


def _path() -> str:
    return os.environ.get("PATH", "") + ":/usr/sbin:/sbin"


def _which(name: str) -> str:
    found = shutil.which(name, path=_path())
    assert found is not None, f"{name} is not installed"
    return found


def _free_ports(count: int) -> list[int]:
    ports: set[int] = set()
    while len(ports) < count:
        ports.add(free_port())
    return sorted(ports)


def slurm_conf(root: Path, ports: list[int]) -> str:
    """slurm.conf of the test cluster: controller on ports[0], node1 and node2 on ports[1] and ports[2]."""
    host = socket.gethostname().split(".")[0]
    nodes = "\n".join(
        f"NodeName={name} NodeHostname=localhost NodeAddr=127.0.0.1 Port={port} CPUs={NODE_CPUS} "
        f"RealMemory={NODE_MEMORY_MB} State=UNKNOWN"
        for name, port in zip(NODES, ports[1:], strict=True)
    )
    return f"""\
# hubfleet test cluster: two node names on this host, everything under {root}.
ClusterName=hubfleettest
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ports[0]}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation={root}/state
SlurmdSpoolDir={root}/spool/%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmdParameters=config_overrides
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=512
ReturnToService=2
MpiDefault=none
SwitchType=switch/none
KillWait=5
MinJobAge=30
{nodes}
PartitionName={PARTITION} Nodes={",".join(NODES)} Default=YES MaxTime=INFINITE State=UP
"""


CGROUP_CONF = """\
# Unused by this cluster (proctrack/linuxproc, task/none): present so that no daemon looks for /etc/slurm's.
CgroupPlugin=autodetect
ConstrainCores=no
ConstrainRAMSpace=no
"""


@dataclass
class SlurmCluster:
    """A running test cluster; `env` is what a Slurm client needs (SLURM_CONF)."""

    root: Path
    conf: Path
    partition: str = PARTITION
    nodes: tuple[str, ...] = NODES
    daemons: list[subprocess.Popen] = field(default_factory=list)
    started_munged: subprocess.Popen | None = None

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def run(self, *argv: str, check: bool = True, timeout: float = 20) -> str:
        """Run a Slurm client command (as root) against this cluster; its stdout."""
        result = subprocess.run(
            [_which(argv[0]), *argv[1:]], capture_output=True, text=True, env=self.env, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def jobs(self) -> list[dict[str, str]]:
        """Jobs squeue shows (pending, running, completing): id, user, state, node, name."""
        out = self.run("squeue", "-h", "-o", "%i|%u|%T|%N|%j")
        keys = ("id", "user", "state", "nodes", "name")
        return [dict(zip(keys, line.split("|"), strict=True)) for line in out.splitlines() if line.strip()]

    def node_states(self) -> dict[str, str]:
        out = self.run("sinfo", "-h", "-N", "-o", "%N %T", check=False)
        return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)

    def log(self, name: str) -> str:
        path = self.root / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_idle(self, timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            states = self.node_states()
            if all(states.get(node) == "idle" for node in self.nodes):
                return
            for process in self.daemons:
                if process.poll() is not None:
                    raise AssertionError(f"{process.args} exited with {process.returncode}:\n{self._logs()}")
            time.sleep(0.1)
        raise AssertionError(f"nodes not idle after {timeout}s: {self.node_states()}\n{self._logs()}")

    def _logs(self) -> str:
        names = ["slurmctld", *(f"slurmd-{node}" for node in self.nodes)]
        return "\n".join(f"--- {name}\n{self.log(name)[-2000:]}" for name in names)

    def cancel_all(self, timeout: float = 30) -> None:
        """Cancel every job and wait until squeue shows none."""
        if self.jobs():
            self.run("scancel", "--full", *(job["id"] for job in self.jobs()), check=False)
        deadline = time.monotonic() + timeout
        while self.jobs():
            assert time.monotonic() < deadline, f"jobs left after scancel: {self.jobs()}"
            time.sleep(0.2)


def _munge_works() -> bool:
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        encode = subprocess.run([_which("munge"), "-n"], capture_output=True, timeout=5, check=False)
        if encode.returncode == 0:
            decode = subprocess.run(
                [_which("unmunge")], input=encode.stdout, capture_output=True, timeout=5, check=False
            )
            return decode.returncode == 0
    return False


def _start_munged() -> subprocess.Popen | None:
    """munged (as the munge user, in the foreground, so that we hold its pid) unless one already answers."""
    if _munge_works():
        return None
    subprocess.run(
        ["install", "-d", "-o", "munge", "-g", "munge", "-m", "0755", str(MUNGE_SOCKET_DIR)], check=True, timeout=10
    )
    process = subprocess.Popen(
        [_which("munged"), "--foreground"], user="munge", group="munge", extra_groups=[], stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + 10
    while not _munge_works():
        if process.poll() is not None:
            raise AssertionError(f"munged exited with {process.returncode}: {process.stderr.read().decode()}")
        assert time.monotonic() < deadline, "munged did not answer within 10 s"
        time.sleep(0.05)
    return process


def _stop(process: subprocess.Popen, timeout: float = 15) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@contextlib.contextmanager
def slurm_cluster() -> Iterator[SlurmCluster]:
    """Start munged (if none answers), slurmctld and one slurmd per node; on exit cancel every job, stop them all."""
    need("root", "slurm")
    # Not under pytest's 0700 temporary root: hub users read slurm.conf.
    root = Path(tempfile.mkdtemp(prefix="hubfleet-slurm-", dir="/tmp"))
    root.chmod(0o755)
    for sub in ("state", "run", "log", *(f"spool/{node}" for node in NODES)):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub).chmod(0o755)
    (root / "spool").chmod(0o755)
    conf = root / "slurm.conf"
    conf.write_text(slurm_conf(root, _free_ports(1 + len(NODES))))
    (root / "cgroup.conf").write_text(CGROUP_CONF)
    for path in (conf, root / "cgroup.conf"):
        path.chmod(0o644)
    cluster = SlurmCluster(root=root, conf=conf)
    try:
        cluster.started_munged = _start_munged()
        env = cluster.env
        cluster.daemons.append(
            subprocess.Popen([_which("slurmctld"), "-D", "-f", str(conf)], env=env, stderr=subprocess.DEVNULL)
        )
        for node in NODES:
            cluster.daemons.append(
                subprocess.Popen(
                    [_which("slurmd"), "-D", "-N", node, "-f", str(conf)], env=env, stderr=subprocess.DEVNULL
                )
            )
        cluster.wait_idle()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.cancel_all()
        # slurmd first (they report to the controller on the way down), then slurmctld, then our munged.
        for process in reversed(cluster.daemons):
            _stop(process)
        if cluster.started_munged is not None:
            _stop(cluster.started_munged)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def slurm_cluster_in_env() -> Iterator[SlurmCluster]:
    """A test cluster whose SLURM_CONF is exported while it runs: `hubfleet up` and its hubs find it there."""
    with slurm_cluster() as running:
        before = os.environ.get("SLURM_CONF")
        os.environ["SLURM_CONF"] = str(running.conf)
        try:
            yield running
        finally:
            if before is None:
                os.environ.pop("SLURM_CONF", None)
            else:
                os.environ["SLURM_CONF"] = before
