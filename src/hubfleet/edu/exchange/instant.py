"""Instant feedback: a submission's visible tests graded when it arrives, by warm graders the exchange service keeps.

For an assignment released with instant feedback, :meth:`InstantGrader.request` queues each new submission; one
of the service's grading threads (at most ``workers`` per hub: the concurrency cap) grades it in its sandbox —
kept warm between submissions, so the forkserver's start-up is paid once — against the **student version** of the
tests (:func:`~hubfleet.edu.assignments.student_version.visible_only`: hidden tests never reach the sandbox, and
test cells with nothing but hidden tests are left out) and stores the result (:class:`~.tables.Check`), which the
student reads with ``hubfleet-assignment submit`` or ``GET …/submissions/ID/check``. The instructor's autograde is
unchanged. Bounds: each student gets at most ``per_student`` checks per ``window`` seconds (more are refused,
with the wait); at most ``queue_size`` wait (more are refused as busy); a grader idle for ``idle_seconds`` stops
its sandbox.
"""

from __future__ import annotations

import collections
import logging
import queue
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from hubfleet.edu.assignments.grader import grade_submission, limits_for
from hubfleet.edu.assignments.models import GradeResult, GradingSpec
from hubfleet.edu.assignments.models import Submission as GradingSubmission
from hubfleet.edu.assignments.sandbox import Sandbox, SandboxError, SandboxLimits
from hubfleet.edu.assignments.student_version import visible_only
from hubfleet.edu.exchange.store import Exchange
from hubfleet.edu.exchange.tables import utcnow
from hubfleet.edu.exchange.workflow import write_folder
from hubfleet.system import cgroups

__all__ = ["InstantGrader", "InstantLimits"]

log = logging.getLogger("hubfleet.exchange.instant")


@dataclass(frozen=True)
class InstantLimits:
    """How much instant feedback a hub gives (see the module docstring)."""

    workers: int = 2
    per_student: int = 6
    window: float = 60.0
    queue_size: int = 20
    idle_seconds: float = 1800.0
    sandbox: SandboxLimits = field(
        default_factory=lambda: SandboxLimits(cell_seconds=10.0, notebook_seconds=60.0, memory_bytes=512 * 2**20)
    )


@dataclass(frozen=True)
class _Job:
    course: str
    name: str
    submission_id: int


class InstantGrader:
    """The hub's instant-feedback graders (threads, each with a warm sandbox once it has work)."""

    def __init__(self, exchange: Exchange, limits: InstantLimits = InstantLimits()) -> None:
        self.exchange = exchange
        self.limits = limits
        self._jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=limits.queue_size)
        self._threads: list[threading.Thread] = []
        self._recent: dict[tuple[str, str], collections.deque[float]] = {}
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._specs: dict[tuple[str, str, str], tuple[GradingSpec, tempfile.TemporaryDirectory]] = {}

    # ------------------------------------------------------------------------------------------ requests

    def request(self, course: str, name: str, student: str, submission_id: int) -> str:
        """Queue a check of a new submission; its state: ``queued``, or ``refused`` (rate limit, busy)."""
        now = time.monotonic()
        with self._lock:
            recent = self._recent.setdefault((course, student), collections.deque())
            while recent and now - recent[0] > self.limits.window:
                recent.popleft()
            if len(recent) >= self.limits.per_student:
                wait = self.limits.window - (now - recent[0])
                message = f"at most {self.limits.per_student} checks per {self.limits.window:g} s: next in {wait:.0f} s"
                self.exchange.record_check(submission_id, "refused", message=message)
                return "refused"
            recent.append(now)
        self.exchange.record_check(submission_id, "queued")
        try:
            self._jobs.put_nowait(_Job(course, name, submission_id))
        except queue.Full:
            self.exchange.record_check(submission_id, "refused", message="the graders are busy: submit again soon")
            return "refused"
        self._start_threads()
        return "queued"

    def warm(self) -> None:
        """Start one grader with its sandbox now (before the first submission)."""
        self._start_threads(1, warm=True)

    def _start_threads(self, count: int | None = None, *, warm: bool = False) -> None:
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            wanted = min(self.limits.workers, count or max(1, self._jobs.qsize()))
            while len(self._threads) < wanted:
                thread = threading.Thread(
                    target=self._work, args=(warm,), name=f"instant-{len(self._threads)}", daemon=True
                )
                thread.start()
                self._threads.append(thread)

    def close(self) -> None:
        """Stop the graders (their sandboxes end with their threads)."""
        self._stopped.set()
        for _ in self._threads:
            try:
                self._jobs.put_nowait(None)
            except queue.Full:
                break
        for thread in self._threads:
            thread.join(timeout=10)
        for _, folder in self._specs.values():
            folder.cleanup()

    # ------------------------------------------------------------------------------------------ grading

    def _spec(self, course: str, name: str) -> tuple[GradingSpec, Path]:
        """The assignment's visible-tests spec and its student version on disk (made once per release)."""
        assignment = self.exchange.assignment(course, name)
        key = (course, name, assignment.released_at.isoformat())
        with self._lock:
            found = self._specs.get(key)
            if found is None:
                folder = tempfile.TemporaryDirectory(prefix="hubfleet-instant-")
                release = Path(folder.name) / "release"
                write_folder(release, self.exchange.release_files(course, name))
                spec = visible_only(GradingSpec.model_validate(assignment.grading_spec), release)
                found = self._specs[key] = (spec, folder)
        return found[0], Path(found[1].name) / "release"

    def _work(self, warm: bool) -> None:
        box: Sandbox | None = None
        idle_since = time.monotonic()
        try:
            if warm:
                box = self._sandbox()
            while not self._stopped.is_set():
                try:
                    job = self._jobs.get(timeout=min(60.0, self.limits.idle_seconds))
                except queue.Empty:
                    if box is not None and time.monotonic() - idle_since > self.limits.idle_seconds:
                        box.close()
                        box = None
                    continue
                if job is None:
                    return
                try:
                    box = box or self._sandbox()
                    self._grade(box, job)
                except SandboxError as exc:
                    log.error("instant feedback on submission %s failed: %s", job.submission_id, exc)
                    self.exchange.record_check(job.submission_id, "failed", message=str(exc), finished_at=utcnow())
                    if box is not None:
                        box.close()
                    box = None
                except Exception as exc:  # a broken spec or database: that check fails, the grader goes on
                    log.exception("instant feedback on submission %s failed", job.submission_id)
                    self.exchange.record_check(job.submission_id, "failed", message=str(exc), finished_at=utcnow())
                idle_since = time.monotonic()
        finally:
            if box is not None:
                box.close()

    def _sandbox(self) -> Sandbox:
        return Sandbox(limits=self.limits.sandbox, driver=cgroups.detect())

    def _grade(self, box: Sandbox, job: _Job) -> None:
        spec, release = self._spec(job.course, job.name)
        box.limits = limits_for(spec, self.limits.sandbox)
        self.exchange.record_check(job.submission_id, "running")
        with tempfile.TemporaryDirectory(prefix="hubfleet-instant-") as tmp:
            folder = Path(tmp) / "submission"
            write_folder(folder, self.exchange.submission_files(job.submission_id))
            submission = GradingSubmission(id=str(job.submission_id), folder=folder)
            result = grade_submission(box, spec, submission, None, data_dir=release)
        self.exchange.record_check(job.submission_id, "done", **_summary(result))


def _summary(result: GradeResult) -> dict:
    """What a student sees of a check: the visible test cells' scores and messages, and the submission's errors."""
    notebooks = {
        name: [
            {
                "cell": cell.grade_id,
                "points": cell.points,
                "max_points": cell.max_points,
                "status": cell.status,
                "message": cell.message[:2000],
            }
            for cell in cells
            if cell.kind == "auto"
        ]
        for name, cells in result.notebooks.items()
    }
    every = [cell for cells in notebooks.values() for cell in cells]
    return {
        "results": notebooks,
        "total": round(sum(cell["points"] or 0.0 for cell in every), 6),
        "max_total": sum(cell["max_points"] for cell in every),
        "seconds": result.seconds,
        "finished_at": utcnow(),
        "message": "; ".join(result.errors) or None,
    }
