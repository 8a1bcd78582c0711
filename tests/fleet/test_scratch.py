"""Per-user scratch folders on a real fleet: ~/scratch and $SCRATCH_DIR in users' servers, private, swept.

The supervisor sweeps every second here (HUBFLEET_SCRATCH_SWEEP_EVERY), instead of every 10 minutes.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hubfleet.fleet.scratch import SWEEP_EVERY_ENV
from hubfleet.health.client import CodeError, PasswordLogin
from tests.helpers import RunningFleet, running_fleet, unique_hub, wait_until

HUB = unique_hub("ts")
PASSWORD = "scratch-test-password"
HUBS = f"""\
{HUB}:
  auth: {{type: shared-password, password: {PASSWORD}, allowed_users: [alice, bob]}}
  profiles: [{{name: small, cpu: 1, memory: 1G}}]
  culling: {{enabled: false}}
  storage: {{scratch: {{size: 1G, max_age: 1d}}}}
"""


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningFleet]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv(SWEEP_EVERY_ENV, "1")
        with running_fleet(tmp_path_factory.mktemp("scratch"), HUBS, [HUB], PASSWORD) as running:
            yield running


def scratch_of(fleet: RunningFleet, user: str) -> Path:
    return fleet.shared_root / HUB / "scratch" / f"{HUB}_{user}"


def in_kernel(fleet: RunningFleet, user: str, code: str, timeout: float = 120) -> str:
    return fleet.run_code(HUB, PasswordLogin(user, PASSWORD), code, timeout)


LOOK = """\
import json, os, pwd, stat
link = os.path.expanduser("~/scratch")
info = os.stat(os.environ["SCRATCH_DIR"])
with open(os.path.join(link, "result.txt"), "w") as out:
    out.write("42")
print(json.dumps({
    "env": os.environ["SCRATCH_DIR"], "link": os.readlink(link), "me": pwd.getpwuid(os.getuid()).pw_name,
    "owner": pwd.getpwuid(info.st_uid).pw_name, "mode": stat.S_IMODE(info.st_mode),
}))
"""


def test_each_user_has_a_private_scratch_linked_in_the_home(fleet: RunningFleet) -> None:
    seen = json.loads(in_kernel(fleet, "alice", LOOK))
    mine = str(scratch_of(fleet, "alice"))
    assert seen == {"env": mine, "link": mine, "me": f"{HUB}_alice", "owner": f"{HUB}_alice", "mode": 0o700}
    assert (scratch_of(fleet, "alice") / "result.txt").read_text() == "42"
    parent = (fleet.shared_root / HUB / "scratch").stat()
    assert (parent.st_uid, parent.st_gid, stat.S_IMODE(parent.st_mode)) == (0, 0, 0o755)


def test_a_user_cannot_read_another_users_scratch(fleet: RunningFleet) -> None:
    alices = scratch_of(fleet, "alice")
    assert json.loads(in_kernel(fleet, "bob", LOOK))["owner"] == f"{HUB}_bob"
    for code in (
        f"import os\nprint(os.listdir({str(alices)!r}))",
        f"print(open({str(alices / 'result.txt')!r}).read())",
        f"import os\nos.mkdir({str(alices.parent / 'mine-too')!r})",
    ):
        with pytest.raises(CodeError, match="PermissionError"):
            in_kernel(fleet, "bob", code)


def test_the_fleet_sweeps_old_files_away(fleet: RunningFleet) -> None:
    code = (
        "import os, time\nd = os.environ['SCRATCH_DIR']\nos.makedirs(d + '/run', exist_ok=True)\n"
        "open(d + '/run/old.bin', 'w').write('old')\nopen(d + '/new.bin', 'w').write('new')\n"
        "os.utime(d + '/run/old.bin', (time.time() - 30 * 86400,) * 2)\nprint('ok')"
    )
    assert in_kernel(fleet, "alice", code) == "ok"
    old, new = scratch_of(fleet, "alice") / "run" / "old.bin", scratch_of(fleet, "alice") / "new.bin"
    wait_until(lambda: not old.exists() and not old.parent.exists(), 30, "the sweep to remove the old file", every=0.2)
    assert new.read_text() == "new"
    log = (fleet.state_dir / "supervisor.log").read_text()
    assert f"scratch of hub {HUB}: removed {old}" in log
    assert os.path.isdir(scratch_of(fleet, "alice"))
