"""A durable, append-only record of grade results: one JSON line per :class:`~.models.GradeResult`.

Each result is written and ``fsync``-ed before the call returns, so after a crash every result a caller was told
about is on disk. A line cut short by a crash is dropped when the journal is opened again. Use it as
``grade_batch(..., skip=journal.done_ids().__contains__, on_result=journal)`` to resume an interrupted batch: each
submission ends up in the journal exactly once.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from hubfleet.edu.assignments.models import GradeResult

__all__ = ["JournalSink"]


class JournalSink:
    """Append-only JSONL journal of grade results at ``path`` (created with mode 0600)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        self._drop_torn_tail()

    def _drop_torn_tail(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            data = f.read()
        if data.endswith(b"\n"):
            return
        os.ftruncate(self._fd, data.rfind(b"\n") + 1)
        os.fsync(self._fd)

    def __call__(self, result: GradeResult) -> None:
        """Append ``result`` and make it durable."""
        line = result.model_dump_json().encode() + b"\n"
        written = 0
        while written < len(line):
            written += os.write(self._fd, line[written:])
        os.fsync(self._fd)

    def results(self) -> Iterator[GradeResult]:
        """Every complete result in the journal, oldest first (a later line for the same id supersedes it)."""
        with open(self.path, "rb") as f:
            for line in f:
                if not line.endswith(b"\n"):
                    return
                try:
                    yield GradeResult.model_validate_json(line)
                except ValidationError:
                    continue

    def done_ids(self) -> set[str]:
        """Ids of the submissions already in the journal."""
        return {result.submission_id for result in self.results()}

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> JournalSink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
