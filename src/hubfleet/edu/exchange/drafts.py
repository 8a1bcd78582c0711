"""Student versions made for a preview on the course pages and not released yet ("drafts").

An instructor uploads (or picks) a source folder; the exchange makes the student version at once and shows it; the
release that follows releases exactly what was shown. Drafts live in a private folder of the service (the grading
spec in them holds the hidden tests), at most `MAX_DRAFTS` at a time, each for `TTL` seconds; a draft is gone
after its release, after a restart of the service, or when it is older — the page then asks to upload again.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from hubfleet.edu.assignments import GradingSpec
from hubfleet.edu.exchange.store import NotFound
from hubfleet.edu.exchange.workflow import PreparedRelease, read_folder, write_folder

TTL = 3600.0
MAX_DRAFTS = 20


@dataclass(frozen=True)
class Draft:
    """A prepared release waiting for its instructor's "release"."""

    id: str
    course: str
    by: str
    source: str  # where it came from, as the page says it ("upload hw1.zip", "course folder hw1")
    prepared: PreparedRelease


class Drafts:
    """The service's drafts, on disk below a private temporary folder (removed by `close`)."""

    def __init__(self, ttl: float = TTL, max_drafts: int = MAX_DRAFTS) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hubfleet-drafts-"))  # mode 0700
        self.ttl = ttl
        self.max_drafts = max_drafts
        self._lock = threading.Lock()

    def close(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)

    def _sweep(self) -> None:
        """Drop expired drafts, then the oldest ones beyond the limit (one slot stays free for a new draft)."""
        drafts = sorted(self.root.iterdir(), key=lambda folder: folder.stat().st_mtime)
        now = time.time()
        for number, folder in enumerate(drafts):
            if now - folder.stat().st_mtime > self.ttl or len(drafts) - number >= self.max_drafts:
                shutil.rmtree(folder, ignore_errors=True)

    def add(self, course: str, by: str, source: str, prepared: PreparedRelease) -> Draft:
        """Keep a prepared release as a draft of `course`."""
        draft = Draft(id=secrets.token_urlsafe(16), course=course, by=by, source=source, prepared=prepared)
        with self._lock:
            self._sweep()
            folder = self.root / draft.id
            write_folder(folder / "files", prepared.files)
            meta = {
                "course": course,
                "by": by,
                "source": source,
                "due": prepared.due.isoformat() if prepared.due else None,
                "late_policy": prepared.late_policy,
            }
            (folder / "spec.json").write_text(prepared.spec.dumps(), encoding="utf-8")
            (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
        return draft

    def get(self, course: str, draft_id: str) -> Draft:
        """The draft of `course` (NotFound: unknown, of another course, expired)."""
        folder = self.root / draft_id
        with self._lock:
            fresh = folder.is_dir() and time.time() - folder.stat().st_mtime <= self.ttl
            if not draft_id.replace("-", "").replace("_", "").isalnum() or not fresh:
                raise NotFound("this preview has expired or was released already: make the student version again")
            meta = json.loads((folder / "meta.json").read_text(encoding="utf-8"))
            if meta["course"] != course:
                raise NotFound("this preview has expired or was released already: make the student version again")
            prepared = PreparedRelease(
                spec=GradingSpec.loads((folder / "spec.json").read_text(encoding="utf-8")),
                files=read_folder(folder / "files"),
                due=dt.datetime.fromisoformat(meta["due"]) if meta["due"] else None,
                late_policy=meta["late_policy"],
            )
        return Draft(id=draft_id, course=course, by=meta["by"], source=meta["source"], prepared=prepared)

    def remove(self, draft_id: str) -> None:
        with self._lock:
            shutil.rmtree(self.root / draft_id, ignore_errors=True)
