"""What the commands print, read as an operator reads it: no emoji made of a message's text, numbers without
exponents, URLs never cut to fit a table, YAML mistakes at their line in plain words, warnings for a fleet that does
not fit this machine, report tables that fit the terminal without cutting a number, and `--version`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

from hubfleet import __version__
from hubfleet.cli import output, reports
from hubfleet.cli.check import _report_table
from hubfleet.cli.fleet import _status_table
from hubfleet.cli.reports import cell, emit
from hubfleet.common.status import FleetStatus, HubStatus
from hubfleet.fleet.fit import Machine, machine_warnings
from hubfleet.health.check import CheckReport, CheckStep
from hubfleet.spec import parse

NATIVE = "    auth: {type: native}\n"


def hubfleet(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The real command, its output to a pipe."""
    return subprocess.run(
        [sys.executable, "-m", "hubfleet", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def test_emoji_codes_in_a_message_stay_text(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("name: t\nhubs:\n  a:\n" + NATIVE + '    ":100:": 1\n')
    result = hubfleet("validate", "f.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "unknown key ':100:'" in result.stderr and "💯" not in result.stderr
    assert not output.console._emoji and not output.errors._emoji  # on a terminal too


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ("name: t\nhubs:\n  a:\n    auth: {type: native\n  b: 1\n", 4, 11, "the '{' here is never closed"),
        ("name: t\nhubs:\n  a:\n    auth: [1,\n  c: 2\n", 4, 11, "the '[' here is never closed"),
        ('name: t\nhubs:\n  a:\n    title: "abc\n  b: 1\n', 4, 12, "the quote here is never closed"),
        ("name: t\nhubs:\n\ta: 1\n", 3, 1, "a tab character: YAML indents with spaces only"),
        ("name: demo:100:\nhubs: {}\n", 1, 15, "quote the value"),
        ("name: t\nhubs:\n  a:\n    auth:\n      type: native\n     admins: [x]\n", 6, 6, "indentation"),
    ],
    ids=["open-brace", "open-bracket", "open-quote", "tab", "colon-in-value", "indentation"],
)
def test_yaml_mistakes_are_shown_at_their_line_in_plain_words(
    tmp_path: Path, text: str, line: int, column: int, words: str
) -> None:
    (tmp_path / "f.yaml").write_text(text)
    result = hubfleet("validate", "f.yaml", cwd=tmp_path)
    assert result.returncode == 1
    message = " ".join(result.stderr.split())
    assert f"f.yaml:{line}:{column}: this is not valid YAML: " in message
    assert words in message
    assert "hint: the YAML parser says:" in message  # its own words come second


def test_numbers_are_never_printed_with_an_exponent() -> None:
    assert cell(2.528e-07) == "<0.0001"
    assert cell(0.0) == "0"
    assert cell(1.234567) == "1.2346"
    assert cell(12.5) == "12.5"
    assert cell(1234.5) == "1,234.50"
    assert cell(2.528e-07, money=True) == "0.00"
    assert all("e" not in cell(value) for value in (1e-12, 3.3e-5, 7e-3, 99.99))


def test_status_urls_are_never_cut() -> None:
    names = ["research", "university-physics", "college"]
    hubs = [
        HubStatus(
            name=name,
            title=name,
            url=f"https://hubs.example-university.edu/hubs/{name}/",
            backend="local",
            state="running",
            healthy=True,
            pids={"hub": 412345, "exchange": 412399, "dask-gateway": 412400},
            users=123,
            running_servers=45,
        )
        for name in names
    ]
    document = FleetStatus(
        fleet="demo", front_door="https://hubs.example-university.edu", pid=1, ready=True, source="f", hubs=hubs
    )
    for width in (80, 100, 120):
        console = Console(width=width, record=True, emoji=False)
        console.print(_status_table(document))
        text = console.export_text()
        assert all(len(line) <= width for line in text.splitlines())
        for hub in hubs:
            assert hub.url in text
        for name in names:
            assert f"│ {name} " in text  # hub names whole, too
        for process in ("hub 412345", "exchange 412399", "dask-gateway 412400"):
            assert text.count(process) == len(hubs), text  # and pids


def test_report_tables_fit_the_terminal_and_never_cut_a_number(monkeypatch: pytest.MonkeyPatch) -> None:
    columns = [
        ("hub", "hub"),
        ("plan", "plan"),
        ("users", "users"),
        ("idle", "idle capacity"),
        ("fee", "hub fee (cost)"),
        ("total", "total USD"),
        ("budget", "budget"),
        ("budget_used", "budget used"),
        ("plan_fee", "plan pays"),
        ("top_user", "top user"),
    ]
    rows = [
        {
            "hub": name,
            "plan": "paid",
            "users": 12345.678,
            "idle": 0.5,
            "fee": 300.0,
            "total": 12646.18,
            "budget": 150000.0,
            "budget_used": "8%",
            "plan_fee": 2500.0,
            "top_user": "grace (1,234.56)",
        }
        for name in ("research", "university-physics")
    ]
    numbers = ["12,345.68", "0.50", "300.00", "12,646.18", "150,000.00"]
    every = ["top user", "plan pays", "budget used"]
    for width, left_out in ((200, []), (100, every[:2]), (80, every)):
        screen = Console(width=width, record=True, emoji=False)
        monkeypatch.setattr(reports, "console", screen)
        emit(rows, columns, "Cost", False, False, optional=["top_user", "plan_fee", "budget_used"])
        text = screen.export_text()
        assert all(len(line) <= width for line in text.splitlines()), text
        assert all(text.count(number) == len(rows) for number in numbers), text
        assert "…" not in text
        if left_out:
            assert f"left out at this width: {', '.join(left_out)} (" in " ".join(text.split())
        else:
            assert "left out" not in text and text.count("2,500.00") == len(rows)
        if width >= 100:
            assert "│ university-physics │" in text  # names whole as well, while the terminal allows
    narrow = Console(width=40, record=True, emoji=False)  # too narrow for whole values: they wrap, never go
    monkeypatch.setattr(reports, "console", narrow)
    emit(rows[:1], columns[:4], "Cost", False, False)
    assert "12,34" in narrow.export_text() and "…" not in narrow.export_text()


def test_check_keeps_each_steps_name_and_time_together() -> None:
    names = ["login", "start-server", "start-kernel", "run-code", "dask", "stop-kernel", "stop-server"]
    passed = CheckReport("research", "u", True, [CheckStep(n, True, 0.25 * i) for i, n in enumerate(names)], 5.25)
    why = "the kernel did not answer within 30 s: " + "its log says nothing " * 4
    failed_steps = [CheckStep("login", True, 0.61), CheckStep("start-server", True, 1.15)]
    failed_steps.append(CheckStep("start-kernel", False, 30.0, why))
    failed = CheckReport("university-physics", "u", False, failed_steps, 31.76)
    for width in (80, 120):
        screen = Console(width=width, record=True, emoji=False)
        screen.print(_report_table([passed, failed], width))
        lines = screen.export_text().splitlines()
        assert all(len(line) <= width for line in lines)
        for step in [*passed.steps, *failed_steps]:
            assert any(f"{step.name} {step.seconds:.2f}s" in line for line in lines), (step, lines)
        assert "FAIL" in "".join(lines) and "its log says nothing" in "".join(lines)


def test_plan_says_when_no_fleet_is_running(tmp_path: Path) -> None:
    (tmp_path / "f.yaml").write_text("name: t\nhubs:\n  a:\n" + NATIVE)
    result = hubfleet("plan", "f.yaml", "--state-dir", str(tmp_path / "state"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    said = " ".join(result.stdout.split())
    assert f"No fleet is running from {tmp_path / 'state'}; compared with nothing: it never ran." in said
    assert "+ hub a: added" in said


def test_a_fleet_that_does_not_fit_this_machine_is_valid_with_warnings(tmp_path: Path) -> None:
    text = (
        "name: t\ninternal_ports: {start: 30000, end: 40000}\nhubs:\n  a:\n"
        + NATIVE
        + "    profiles:\n      - {name: big, memory: 64G, cpu: 8}\n      - {name: ok, memory: 1G, cpu: 1}\n"
    )
    fleet = parse(text, tmp_path / "f.yaml")
    small = Machine(memory_bytes=16 * 1024**3, cpus=4, ephemeral_ports=(32768, 60999))
    warnings = machine_warnings(fleet, small)
    assert len(warnings) == 3
    assert warnings[0].startswith("hub a, profile big: memory 64.0 GiB is more than this machine has (16.0 GiB)")
    assert warnings[1].startswith("hub a, profile big: cpu 8 is more cores than this machine has (4)")
    assert "overlap the kernel's ephemeral range 32768-60999" in warnings[2] and "below 32768" in warnings[2]
    big = Machine(memory_bytes=128 * 1024**3, cpus=16, ephemeral_ports=(49152, 65535))
    assert machine_warnings(fleet, big) == []

    (tmp_path / "f.yaml").write_text(text)
    result = hubfleet("validate", "f.yaml", cwd=tmp_path)
    assert result.returncode == 0  # valid: warnings only
    if Machine.here().ephemeral_ports is not None:
        assert "warning: internal_ports 30000-40000 overlap the kernel's ephemeral range" in " ".join(
            result.stderr.split()
        )


def test_version(tmp_path: Path) -> None:
    result = hubfleet("--version", cwd=tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith(f"hubfleet {__version__} (JupyterHub ")
