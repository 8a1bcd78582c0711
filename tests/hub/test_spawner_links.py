"""Links the spawner (root) places in users' homes: ~/shared/<folder> and ~/scratch, never following a user's link.

Pure and fast: a temporary "home"; as root the links are given to `nobody`, else to the current user.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from hubfleet.hub.spawner import SHARED_LINKS_DIR, link_in_home, link_shared_folders

UID, GID = (65534, 65534) if os.geteuid() == 0 else (os.getuid(), os.getgid())


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


def test_shared_links_are_made_updated_and_pruned(tmp_path: Path, home: Path) -> None:
    data, other = tmp_path / "srv" / "data", tmp_path / "srv" / "other"
    assert link_shared_folders(home, UID, GID, {}) == []
    assert not (home / SHARED_LINKS_DIR).exists()  # nothing to link: no folder either
    assert link_shared_folders(home, UID, GID, {"data": data, "other": other}) == []
    links = home / SHARED_LINKS_DIR
    assert os.readlink(links / "data") == str(data) and os.readlink(links / "other") == str(other)
    assert owner(links) == owner(links / "data") == (UID, GID)
    (links / "data").unlink()
    (links / "data").symlink_to("/etc")  # the user pointed it elsewhere: it is put back
    (links / "notes.txt").write_text("mine")
    assert link_shared_folders(home, UID, GID, {"data": data}) == []
    assert sorted(p.name for p in links.iterdir()) == ["data", "notes.txt"]  # the user's own file stays
    assert os.readlink(links / "data") == str(data)


def test_a_file_in_the_way_of_a_link_is_left_alone(tmp_path: Path, home: Path) -> None:
    (home / SHARED_LINKS_DIR).mkdir()
    (home / SHARED_LINKS_DIR / "data").mkdir()
    assert link_shared_folders(home, UID, GID, {"data": tmp_path / "data"}) == ["data"]
    assert (home / SHARED_LINKS_DIR / "data").is_dir()


def test_a_shared_folder_replaced_by_a_link_is_never_followed(tmp_path: Path, home: Path) -> None:
    outside = tmp_path / "etc"
    outside.mkdir()
    (outside / "localtime").symlink_to("/usr/share/zoneinfo/UTC")
    before = owner(outside)
    (home / SHARED_LINKS_DIR).symlink_to(outside)
    with pytest.raises(OSError):
        link_shared_folders(home, UID, GID, {"data": tmp_path / "data"})
    assert owner(outside) == before
    assert [p.name for p in outside.iterdir()] == ["localtime"]  # its links were neither removed nor added


def test_the_scratch_link(tmp_path: Path, home: Path) -> None:
    scratch = tmp_path / "srv" / "scratch" / "h_ann"
    assert link_in_home(home, UID, GID, "scratch", scratch, scratch)
    assert os.readlink(home / "scratch") == str(scratch) and owner(home / "scratch") == (UID, GID)
    (home / "scratch").unlink()
    (home / "scratch").symlink_to(tmp_path)
    assert link_in_home(home, UID, GID, "scratch", scratch, scratch)
    assert os.readlink(home / "scratch") == str(scratch)
    # Without scratch, only a link to the old place is removed.
    assert link_in_home(home, UID, GID, "scratch", None, scratch)
    assert not (home / "scratch").is_symlink()
    (home / "scratch").symlink_to(tmp_path)
    assert link_in_home(home, UID, GID, "scratch", None, scratch)
    assert (home / "scratch").is_symlink()


def test_a_users_own_scratch_folder_is_left_alone(tmp_path: Path, home: Path) -> None:
    (home / "scratch").mkdir()
    (home / "scratch" / "results.csv").write_text("1,2\n")
    assert not link_in_home(home, UID, GID, "scratch", tmp_path / "s", tmp_path / "s")
    assert link_in_home(home, UID, GID, "scratch", None, tmp_path / "s")
    assert (home / "scratch" / "results.csv").read_text() == "1,2\n"


def test_a_home_that_is_a_link_is_refused(tmp_path: Path, home: Path) -> None:
    fake = tmp_path / "fake-home"
    fake.symlink_to(home)
    with pytest.raises(OSError):
        link_in_home(fake, UID, GID, "scratch", tmp_path / "s", tmp_path / "s")
    assert not (home / "scratch").exists()
