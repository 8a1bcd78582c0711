"""Unit tests of deep linking's parts (settings, response token, picking sessions), link destinations, nbgitpuller
paths, and the process that puts an assignment into a home. The end-to-end tests are in test_deeplinking.py."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
from joserfc import jwt

from hubfleet.edu.links import (
    AssignmentLink,
    GitContent,
    LinkError,
    Notebook,
    course_content,
    course_notebooks,
    destination_of,
    git_pull_path,
    repo_name,
)
from hubfleet.edu.lti.deeplinking import (
    DL_CLAIM,
    LTI_CLAIM,
    DeepLinkingSettings,
    LineItemRequest,
    PickSessions,
    link_item,
    resource_link_item,
    response_token,
)
from hubfleet.edu.lti.keys import ToolKey
from hubfleet.edu.lti.launch import Launch
from hubfleet.hub.authenticators.lti._landing import first_notebook
from hubfleet.hub.home_files import put_files

SETTINGS = {
    "deep_link_return_url": "https://lms.example/dl/return",
    "accept_types": ["ltiResourceLink", "link"],
    "accept_presentation_document_targets": ["iframe", "window"],
    "accept_multiple": True,
    "accept_lineitem": True,
    "data": {"csrf": "abc"},
}


def test_deep_linking_settings_are_read_and_bounded() -> None:
    settings = DeepLinkingSettings.from_claim(SETTINGS)
    assert settings.accepts("ltiResourceLink") and settings.accept_multiple and settings.accept_lineitem
    assert settings.has_data and settings.data == {"csrf": "abc"}
    plain = DeepLinkingSettings.from_claim({"deep_link_return_url": "https://x/r", "accept_types": ["link"]})
    assert not plain.accept_multiple and plain.accept_lineitem is None and not plain.has_data


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"deep_link_return_url": None}, "deep_link_return_url"),
        ({"deep_link_return_url": "javascript:alert(1)"}, "http(s)"),
        ({"accept_types": []}, "accept_types"),
        ({"accept_types": "ltiResourceLink"}, "list of strings"),
        ({"accept_multiple": "yes"}, "true or false"),
        ({"data": "x" * 5000}, "larger than"),
    ],
)
def test_bad_deep_linking_settings_are_refused(change: dict[str, Any], words: str) -> None:
    with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
        DeepLinkingSettings.from_claim(SETTINGS | change)


def _launch(settings: dict[str, Any]) -> Launch:
    return Launch(
        issuer="https://lms.example",
        client_id="tool-1",
        deployment_id="dep-1",
        sub="prof",
        message_type="LtiDeepLinkingRequest",
        target_link_uri="https://hub.example/hub/lti13/launch",
        deep_linking=DeepLinkingSettings.from_claim(settings),
    )


def test_the_response_is_signed_by_the_tool_with_the_requests_data(tmp_path: Path) -> None:
    key = ToolKey.load_or_create(tmp_path / "key.pem")
    launch = _launch(SETTINGS)
    settings = launch.deep_linking
    assert settings is not None
    items = [
        resource_link_item(
            settings,
            url="https://hub.example/hub/lti13/launch",
            title="HW 1",
            custom=AssignmentLink("hw1").custom(),
            line_item=LineItemRequest(label="HW 1", score_maximum=2, resource_id="hw1"),
        ),
        link_item(url="https://hub.example/x", title="git"),
    ]
    token = response_token(key, launch, items, message="done")
    decoded = jwt.decode(token, key.private)
    claims = decoded.claims
    assert decoded.header["kid"] == key.kid and decoded.header["alg"] == "RS256"
    assert (claims["iss"], claims["aud"]) == ("tool-1", "https://lms.example")
    assert claims[f"{LTI_CLAIM}message_type"] == "LtiDeepLinkingResponse"
    assert claims[f"{LTI_CLAIM}deployment_id"] == "dep-1" and claims[f"{DL_CLAIM}data"] == {"csrf": "abc"}
    assert claims["nonce"] and claims["exp"] > claims["iat"]
    first = claims[f"{DL_CLAIM}content_items"][0]
    assert first["custom"] == {"assignment": "hw1"} and first["window"] == {"targetName": "_blank"}
    assert first["lineItem"]["scoreMaximum"] == 2
    single = _launch(SETTINGS | {"accept_multiple": False})
    with pytest.raises(ValueError, match="more content items"):
        response_token(key, single, items)
    no_data = {k: v for k, v in SETTINGS.items() if k != "data"}
    assert f"{DL_CLAIM}data" not in jwt.decode(response_token(key, _launch(no_data), []), key.private).claims


def test_picking_sessions_are_single_use_expire_and_are_bounded() -> None:
    now = [0.0]
    store = PickSessions(ttl=60, max_entries=3, clock=lambda: now[0])
    launch = _launch(SETTINGS)
    first = store.start(launch, "prof", "ds")
    assert store.get(first.id) is first and store.take(first.id) is first and store.take(first.id) is None
    for _ in range(10):
        store.start(launch, "prof", "ds")
    assert len(store) == 3
    now[0] = 61
    assert store.get("anything") is None and len(store) == 0


@pytest.mark.parametrize(
    ("custom", "expected"),
    [
        ({}, None),
        ({"other_tool": "x"}, None),
        ({"notebook": "week3/./intro.ipynb"}, Notebook("week3/intro.ipynb")),
        ({"assignment": "hw1"}, AssignmentLink("hw1")),
        ({"git_repo": "https://github.com/org/repo.git"}, GitContent("https://github.com/org/repo.git")),
        (
            {"git_repo": "git://127.0.0.1:9/r", "git_branch": "main", "git_path": "a/b.ipynb"},
            GitContent("git://127.0.0.1:9/r", "main", "a/b.ipynb"),
        ),
    ],
)
def test_custom_parameters_name_a_destination(custom: dict[str, str], expected: object) -> None:
    assert destination_of(custom) == expected


@pytest.mark.parametrize(
    ("custom", "words"),
    [
        ({"notebook": "../x.ipynb"}, "stay inside"),
        ({"notebook": "/etc/passwd"}, "stay inside"),
        ({"assignment": "../hw"}, "invalid assignment name"),
        ({"git_repo": "ext::sh"}, "not a git repository URL"),
        ({"git_repo": "https://h/r.git --upload-pack=x"}, "without spaces"),
        ({"git_repo": "file:///etc"}, "not a git repository URL"),
        ({"git_repo": "https://user:secret@host/r.git"}, "credentials"),
        ({"git_repo": "https://host/r.git", "git_branch": "--upload-pack=x"}, "branch"),
        ({"git_branch": "main"}, "no git_repo"),
        ({"notebook": "a.ipynb", "assignment": "hw1"}, "more than one"),
    ],
)
def test_bad_custom_parameters_are_refused(custom: dict[str, str], words: str) -> None:
    with pytest.raises(LinkError, match=words):
        destination_of(custom)


def test_nbgitpuller_paths_and_course_content() -> None:
    content = course_content("ds", {"content": {"repo": "https://h/org/ds-material.git", "path": "w1.ipynb"}})
    assert content == GitContent("https://h/org/ds-material.git", None, "w1.ipynb", "ds/material")
    path = git_pull_path(content)
    assert path.startswith("git-pull?")
    query = parse_qs(urlparse(path).query)
    assert query == {
        "repo": ["https://h/org/ds-material.git"],
        "targetpath": ["ds/material"],
        "urlpath": ["lab/tree/ds/material/w1.ipynb"],
    }
    assert course_content("ds", {}) is None and course_content("ds", {"content": {"repo": "ftp://x"}}) is None
    assert repo_name("https://h/org/ds-material.git/") == "ds-material" and repo_name("https://h/") == "h"


def test_course_notebooks_are_listed_without_following_links(tmp_path: Path) -> None:
    folder = tmp_path / "course"
    (folder / "week1" / ".ipynb_checkpoints").mkdir(parents=True)
    (folder / "week1" / "a.ipynb").write_text("{}")
    (folder / "week1" / ".ipynb_checkpoints" / "a-checkpoint.ipynb").write_text("{}")
    (folder / "notes.md").write_text("x")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "secret.ipynb").write_text("{}")
    (folder / "link").symlink_to(tmp_path / "elsewhere")
    assert course_notebooks(folder) == ["week1/a.ipynb"]
    assert course_notebooks(tmp_path / "missing") == []
    assert first_notebook(["b/c.ipynb", "z.ipynb", "data.csv", "a/b.ipynb"]) == "z.ipynb"


def test_assignment_files_go_into_a_new_folder_and_never_over_the_students_work(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    files = {"squares.ipynb": b"{}", "data/x.csv": b"x\n1\n"}
    assert put_files(str(home), "ds/hw1", files) == {"created": True, "files": 2}
    assert (home / "ds" / "hw1" / "data" / "x.csv").read_bytes() == b"x\n1\n"
    (home / "ds" / "hw1" / "squares.ipynb").write_text("my work")
    assert put_files(str(home), "ds/hw1", {"squares.ipynb": b"{}"}) == {"created": False}
    assert (home / "ds" / "hw1" / "squares.ipynb").read_text() == "my work"
    assert not [p for p in (home / "ds").iterdir() if p.name.startswith(".")]  # no staging folder left
    (tmp_path / "outside").mkdir()
    (home / "trap").symlink_to(tmp_path / "outside")
    with pytest.raises(OSError):
        put_files(str(home), "trap/hw2", files)  # a link in the way is never followed
    assert not list((tmp_path / "outside").iterdir())
    with pytest.raises(ValueError):
        put_files(str(home), "ds/hw3", {"../../escape": b"x"})
    assert not (tmp_path / "escape").exists()


def test_the_writer_process_speaks_json() -> None:
    home = Path(tempfile.mkdtemp(prefix="hubfleet-home-", dir="/tmp"))  # reachable by nobody, unlike tmp_path
    document = json.dumps({"files": {"a.ipynb": base64.b64encode(b"{}").decode()}})
    command = [sys.executable, "-m", "hubfleet.hub.home_files", str(home), "c/hw"]
    if os.geteuid() == 0:
        os.chown(home, 65534, 65534)
        command += ["--uid", "65534", "--gid", "65534"]  # nobody: the kernel decides as for the user
    try:
        result = subprocess.run(command, input=document, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"created": True, "files": 1}
        if os.geteuid() == 0:
            assert (home / "c" / "hw" / "a.ipynb").stat().st_uid == 65534
    finally:
        shutil.rmtree(home)
