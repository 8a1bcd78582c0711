"""Real builds from PyPI with uv, as the build account: sharing through the cache, failures, the build sandbox.

Each environment gets hubfleet's server side (JupyterLab & co.) plus one tiny package of its own: enough to see
what is shared and what is not, and quick once the cache is warm.
"""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

from hubfleet import envs
from hubfleet.common.environments import EnvStore
from hubfleet.spec.environments import Environment
from hubfleet.spec.models import Builds
from tests.envs.conftest import BUILD_ACCOUNT
from tests.helpers import hubfleet, wait_until

pytestmark = pytest.mark.needs("root")

BUILDS = Builds(account=BUILD_ACCOUNT)


def quiet(step: int, steps: int, doing: str) -> None:
    assert 0 <= step <= steps or steps == 0


def test_two_environments_sharing_most_packages_take_little_more_disk_than_one(env_store: Path) -> None:
    store = EnvStore(env_store)
    builder = envs.Builder(store, BUILDS)
    first = builder.build("ev-disk-a", Environment(packages=["iniconfig"]), quiet)
    one = envs.disk_use([store.prefix(first.version.build)])
    second = builder.build("ev-disk-b", Environment(packages=["tabulate"]), quiet)
    both = envs.disk_use([store.prefix(first.version.build), store.prefix(second.version.build)])
    alone = envs.disk_use([store.prefix(second.version.build)])
    print(f"one environment {one / 2**20:.0f} MiB, two {both / 2**20:.0f} MiB, the second alone {alone / 2**20:.0f}")
    # The second costs its own package and the folder's small files: package files and bytecode are hard links.
    assert both - one < 0.1 * one
    assert alone > 0.9 * one  # ... while each is a whole environment on its own
    prefix = store.prefix(second.version.build)
    assert (prefix / "bin" / "jupyterhub-singleuser").exists()
    assert (prefix / "bin" / "hubfleet-assignment").stat().st_mode & stat.S_IXOTH
    pins = store.pins(second.version.build)
    assert any(pin.startswith("tabulate==") for pin in pins) and "jupyterhub==6.1.1" in pins
    assert not any(pin.startswith("tabulate==") for pin in store.pins(first.version.build))
    # Built by the build account, readable (not writable) by everyone else.
    info = (prefix / "bin" / "jupyterhub-singleuser").stat()
    assert info.st_uid != 0 and not info.st_mode & stat.S_IWOTH
    # The same spec again: nothing to build.
    again = builder.build("ev-disk-b", Environment(packages=["tabulate"]), quiet)
    assert again.version == second.version and not again.new_build and not again.activated


def test_a_broken_requirement_fails_with_the_resolvers_message_and_changes_nothing(env_store: Path) -> None:
    store = EnvStore(env_store)
    builder = envs.Builder(store, BUILDS)
    good = builder.build("ev-broken", Environment(packages=["iniconfig"]), quiet)
    builds_before = sorted(os.listdir(store.builds))
    with pytest.raises(envs.BuildError) as failure:
        builder.build("ev-broken", Environment(packages=["iniconfig<1", "iniconfig>2"]), quiet)
    message = str(failure.value)
    assert "No solution found" in message and "iniconfig<1" in message and "iniconfig>2" in message
    history = store.history("ev-broken")
    assert history.active == good.version.number and history.versions == [good.version]
    assert history.failure is not None and "No solution found" in history.failure.error
    assert sorted(os.listdir(store.builds)) == builds_before
    assert Path(history.failure.log).read_text().count("No solution found") >= 1


def test_a_packages_build_step_runs_as_the_build_account_without_the_fleets_secrets(
    env_store: Path, tmp_path: Path
) -> None:
    """A local package whose setup.py reports who runs it, and what it can read, then fails the build."""
    secrets_dir = tmp_path / "state" / "secrets"
    secrets_dir.mkdir(parents=True)
    os.chmod(tmp_path / "state", 0o700)
    (secrets_dir / "service_token").write_text("TOP-SECRET-TOKEN")
    probe = tmp_path / "evprobe"
    probe.mkdir()
    (probe / "setup.py").write_text(
        textwrap.dedent(
            f"""\
            import os
            def readable(path):
                try:
                    open(path).read()
                    return True
                except OSError:
                    return False
            secret_in_env = any("TOP-SECRET" in value for value in os.environ.values())
            raise SystemExit(
                f"PROBE uid={{os.getuid()}} state={{readable({str(secrets_dir / "service_token")!r})}} "
                f"shadow={{readable('/etc/shadow')}} env_secret={{secret_in_env}}"
            )
            """
        )
    )
    (probe / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools"]\nbuild-backend = "setuptools.build_meta"\n'
    )
    os.environ["HUBFLEET_TEST_SECRET"] = "TOP-SECRET-IN-ENV"
    try:
        builder = envs.Builder(EnvStore(env_store), BUILDS)
        with pytest.raises(envs.BuildError) as failure:
            builder.build("ev-probe", Environment(packages=[f"evprobe @ {probe.as_uri()}"]), quiet)
    finally:
        del os.environ["HUBFLEET_TEST_SECRET"]
    log = Path(failure.value.log or "").read_text()
    assert "PROBE uid=" in log, log[-3000:]
    report = log[log.index("PROBE uid=") :].split("\n", 1)[0]
    uid = int(report.split("uid=")[1].split()[0])
    assert uid != 0 and uid == __import__("pwd").getpwnam(BUILD_ACCOUNT).pw_uid
    assert "state=False" in report and "shadow=False" in report and "env_secret=False" in report
    assert "TOP-SECRET" not in log
    assert stat.S_IMODE(os.stat(failure.value.log or "").st_mode) == 0o600  # logs are the operator's


def test_a_build_in_the_background_shows_progress_and_its_log(env_store: Path, tmp_path: Path) -> None:
    file = tmp_path / "fleet.yaml"
    file.write_text(
        f"name: evbg\npaths: {{environments: {env_store}}}\nbuilds: {{account: {BUILD_ACCOUNT}}}\n"
        "environments:\n  ev-bg: {packages: [iniconfig, tabulate]}\n"
        "hubs:\n  evbghub:\n    auth: {type: native}\n    profiles: [{name: p, environment: ev-bg}]\n"
    )
    store = EnvStore(env_store)
    planned = json.loads(hubfleet("plan", str(file), "--json", "--state-dir", str(tmp_path / "state")).stdout)
    assert planned["environments_to_build"] == ["ev-bg"]
    started = hubfleet("env", "build", "--detach", "--file", str(file))
    assert "in the background" in started.stdout

    # A build takes seconds (bytecode alone): long enough to be seen under way, with its step.
    def under_way() -> str:
        out = hubfleet("env", "list", "--file", str(file)).stdout
        return out if "building" in out else ""

    assert "/6:" in wait_until(under_way, 60, "`env list` to show the build under way")
    followed = hubfleet("env", "logs", "ev-bg", "--follow", "--file", str(file)).stdout
    assert "==> [1/6]" in followed and "==> finished" in followed
    wait_until(lambda: store.history("ev-bg").active == 1, 120, "v1 of ev-bg to be active")
    listing = hubfleet("env", "list", "--file", str(file)).stdout
    assert "ev-bg" in listing and "ready" in listing and "evbghub:p" in listing
    assert "Every environment is built" in hubfleet("env", "build", "--file", str(file)).stdout
