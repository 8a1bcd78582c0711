"""The link-safe tree walk under exports: links are reported, never followed; a link swapped in is refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubfleet.system.trees import walk


def tree(root: Path) -> Path:
    home = root / "home"
    (home / "notes" / "deep").mkdir(parents=True)
    (home / "notes" / "deep" / "a.txt").write_text("a")
    (home / "b.txt").write_text("bb")
    outside = root / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("not yours")
    (home / "to-outside").symlink_to(outside)
    (home / "secret-link").symlink_to(outside / "secret.txt")
    os.mkfifo(home / "pipe")
    return home


def test_links_are_reported_and_never_followed(tmp_path: Path) -> None:
    home = tree(tmp_path)
    problems: list[str] = []
    found = {entry.path: entry.kind for entry in walk(home, lambda path, error: problems.append(path))}
    assert found == {
        "notes": "folder",
        "notes/deep": "folder",
        "notes/deep/a.txt": "file",
        "b.txt": "file",
        "to-outside": "link",
        "secret-link": "link",
        "pipe": "other",
    }
    assert problems == []
    links = {entry.path: entry.readlink() for entry in walk(home, print) if entry.kind == "link"}
    assert links == {"to-outside": str(tmp_path / "outside"), "secret-link": str(tmp_path / "outside" / "secret.txt")}


def test_a_link_swapped_in_after_the_walk_saw_a_file_is_refused(tmp_path: Path) -> None:
    home = tree(tmp_path)
    for entry in walk(home, print):
        if entry.path == "b.txt":
            (home / "b.txt").unlink()
            (home / "b.txt").symlink_to(tmp_path / "outside" / "secret.txt")
            with pytest.raises(OSError):
                entry.open()
        elif entry.path == "notes/deep/a.txt":
            with entry.open() as source:
                assert source.read() == b"a"


def test_a_root_that_is_a_link_is_refused(tmp_path: Path) -> None:
    home = tree(tmp_path)
    (tmp_path / "alias").symlink_to(home)
    with pytest.raises(NotADirectoryError):
        list(walk(tmp_path / "alias", print))
