"""nbgrader's ``### AUTOTEST`` cells, instantiated as nbgrader 0.9's ``InstantiateTests`` preprocessor does.

In a grade cell, a comment line such as ``# AUTOTEST answer; len(answer)`` asks for tests of each snippet
(``answer``, ``len(answer)``) made from templates in ``autotests.yml`` (in the assignment's source folder, else
the course folder): the source notebook — solutions included — runs cell by cell in a fresh sandboxed process; for
each snippet the ``dispatch`` template's value (e.g. its type) picks a list of test templates (``default`` when
none matches); each is ``normalize``-d (and, after ``# HASHED AUTOTEST``, hashed with a salt), run, and its value
becomes an assertion from the ``check`` template. ``setup`` code goes in before the first test of a cell, ``success``
code after the last. Every rule (comment strings by kernel, quote stripping of results, salts, the missing-
``default`` error) follows nbgrader 0.9.6; anything that goes wrong is an error at generate time, naming the cell.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["AutotestError", "AutotestOptions", "Snippets", "instantiate", "needs_autotests", "sandbox_session"]

Snippets = Callable[[str], str | None]
"""Runs code in the notebook's process; returns the text (``text/plain``) of the last value it displayed, or
``None``; raises :class:`AutotestError` when the code raised."""

SnippetSession = Callable[[], AbstractContextManager[Snippets]]
"""Opens a fresh process (working in the assignment's source folder) for one notebook's autotests."""


class AutotestError(ValueError):
    """An ``AUTOTEST`` line could not be turned into tests (no templates, an error while running the source, …)."""


class AutotestOptions(BaseModel):
    """nbgrader's ``InstantiateTests`` options (``nbgrader_config.py``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    autotest_filename: str = "autotests.yml"
    autotest_delimiter: str = "AUTOTEST"
    hashed_delimiter: str = "HASHED"
    comment_strs: dict[str, str] = Field(default_factory=lambda: {"ir": "#", "python": "#", "python3": "#"})


def _sanitize(kernel: str, text: str) -> str:
    """nbgrader's default ``InstantiateTests.sanitizers``."""
    if kernel == "ir":
        return re.sub(r"\[\d+\]\s+", "", text).strip('"').strip("'")
    return text.strip('"').strip("'")


def needs_autotests(nb: Any, options: AutotestOptions) -> bool:
    return any(cell.cell_type == "code" and options.autotest_delimiter in cell.source for cell in nb.cells)


def _render(template: str, **values: Any) -> str:
    import jinja2

    return jinja2.Environment(loader=jinja2.BaseLoader()).from_string(template).render(**values)


class _Templates:
    def __init__(self, document: Any, kernel: str, where: Path) -> None:
        if not isinstance(document, Mapping) or kernel not in document:
            raise AutotestError(f"{where}: no templates for the notebook's kernel {kernel!r}")
        tests = document[kernel]
        try:
            self.by_type: Mapping[str, Any] = tests["templates"]
            self.dispatch: str = tests["dispatch"]
            self.check: str = tests["check"]
            self.normalize: str = tests["normalize"]
        except (KeyError, TypeError) as exc:
            raise AutotestError(f"{where}: {kernel} needs templates, dispatch, check and normalize ({exc})") from None
        self.success: str | None = tests.get("success")
        self.hash: str | None = tests.get("hash")
        self.setup: str | None = tests.get("setup")
        self.where = where


def load_templates(candidates: list[Path], kernel: str) -> _Templates:
    """The first of ``candidates`` (the assignment's, then the course's ``autotests.yml``) that exists."""
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    for path in candidates:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError as exc:
            raise AutotestError(f"{path}: cannot read it: {exc}") from None
        try:
            return _Templates(YAML(typ="safe").load(text), kernel, path)
        except YAMLError as exc:
            raise AutotestError(f"{path}: not valid YAML: {exc}") from None
    raise AutotestError(f"AUTOTEST lines, but no {' or '.join(map(str, candidates))}")


class _Instantiator:
    def __init__(self, templates: _Templates, run: Snippets, kernel: str, options: AutotestOptions) -> None:
        self.templates = templates
        self.run = run
        self.kernel = kernel
        self.options = options
        self.comment = options.comment_strs[kernel]

    def execute(self, code: str) -> str | None:
        result = self.run(code)
        return None if result is None else _sanitize(self.kernel, result)

    def tests_for(self, snippet: str, salt: str | None) -> list[str]:
        t = self.templates
        dispatched = self.execute(_render(t.dispatch, snippet=snippet))
        if "default" not in t.by_type:
            raise AutotestError(f'{t.where}: the templates need a top-level "default" key')
        tests = t.by_type.get(dispatched, t.by_type["default"])
        try:
            test_templates = [entry["test"] for entry in tests]
            failures = [entry["fail"] for entry in tests]
        except (KeyError, TypeError):
            raise AutotestError(f'{t.where}: each type needs a list of entries with "test" and "fail"') from None
        messages = [_render(message, snippet=snippet).replace('"', '\\"') for message in failures]
        normalized = [_render(t.normalize, snippet=template) for template in test_templates]
        if salt is not None:
            normalized = [_render(t.hash or "", snippet=template, salt=salt) for template in normalized]
        lines = []
        for template, message in zip(normalized, messages, strict=True):
            test = _render(template, snippet=snippet)
            value = self.execute(test)
            lines.append(_render(t.check, snippet=test, value=value, message=message))
        return lines

    def cell(self, cell: Any, index: int, is_grade: bool) -> None:
        """Instantiate one code cell in place (and run its code, as nbgrader does)."""
        if not cell.source:
            return
        delimiter, hashed = self.options.autotest_delimiter, self.options.hashed_delimiter
        salt_int = int(hashlib.sha256((cell.source + str(index)).encode("utf-8")).hexdigest(), 16) % 10**6
        new_lines: list[str] = []
        pending: list[str] = []
        setup_inserted = False
        for line in cell.source.split("\n"):
            if delimiter not in line or line.strip()[: len(self.comment)] != self.comment:
                new_lines.append(line)
                pending.append(line)
                continue
            self.execute("\n".join(pending))
            pending = []
            if not is_grade:
                raise AutotestError("an AUTOTEST line in a cell that is not a grade cell (mark it 'Autograder tests')")
            if self.templates.setup is not None and not setup_inserted:
                new_lines.append(self.templates.setup)
                setup_inserted = True
                self.execute(self.templates.setup)
            use_hash = hashed in line[: line.find(delimiter)]
            if use_hash and self.templates.hash is None:
                raise AutotestError("a HASHED AUTOTEST line, but autotests.yml has no hash template")
            snippets = [s.strip() for s in line[line.find(delimiter) + len(delimiter) :].strip(";").split(";")]
            if "" in snippets:
                snippets.remove("")
            for snippet in snippets:
                salt = None
                if use_hash:
                    salt_int += 1
                    salt = hex(salt_int)[2:]
                new_lines.extend(self.tests_for(snippet, salt))
                new_lines.append("")
        if is_grade and delimiter in cell.source and self.templates.success is not None:
            new_lines.append(self.templates.success)
            pending.append(self.templates.success)
        if pending:
            self.execute("\n".join(pending))
        cell.source = "\n".join(new_lines)
        cell.pop("execution", None)


def instantiate(
    nb: Any, candidates: list[Path], session: SnippetSession | None, options: AutotestOptions, *, where: str
) -> None:
    """Replace the AUTOTEST lines of ``nb`` (in place) by tests, running the notebook in ``session``'s process.

    ``candidates``: where ``autotests.yml`` may be, in order. Raises :class:`AutotestError` naming the cell."""
    from hubfleet.edu.assignments import nbgrader_format as fmt

    kernel = nb.metadata.get("kernelspec", {}).get("name", "")
    if kernel not in options.comment_strs:
        raise AutotestError(f"{where}: kernel {kernel!r} has no comment string (InstantiateTests.comment_strs)")
    if kernel not in ("ir", "python", "python3"):
        raise AutotestError(f"{where}: kernel {kernel!r} has no result sanitizer (InstantiateTests.sanitizers)")
    if session is None:
        raise AutotestError(f"{where}: AUTOTEST lines need the grading sandbox to run the source (root, user env)")
    templates = load_templates(candidates, kernel)
    with session() as run:
        instantiator = _Instantiator(templates, run, kernel, options)
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            try:
                instantiator.cell(cell, index, bool(fmt.is_grade(cell)))
            except AutotestError as exc:
                raise AutotestError(f"{where}, cell {index + 1}: {exc}") from None


def _displayed_text(outputs: list[dict[str, Any]]) -> str | None:
    """The ``text/plain`` of the last value the code displayed (what nbgrader's kernel hook keeps)."""
    text = None
    for output in outputs:
        if output.get("output_type") in ("execute_result", "display_data"):
            value = output.get("data", {}).get("text/plain")
            if value is None:
                raise AutotestError("a value without a text/plain form was displayed")
            text = "".join(value) if isinstance(value, list) else str(value)
    return text


def sandbox_session(source_root: Path) -> SnippetSession:
    """Runs AUTOTEST snippets in a grading sandbox (root, the user environment) working in a copy of
    ``source_root``, as nbgrader runs them in a kernel started in the assignment's source folder."""

    @contextlib.contextmanager
    def session() -> Iterator[Snippets]:
        from hubfleet.edu.assignments.sandbox import Sandbox, SandboxError, SandboxLimits
        from hubfleet.system import cgroups

        try:
            with Sandbox(limits=SandboxLimits(), driver=cgroups.detect()) as box:
                workdir = box.new_workdir(source_root)
                try:
                    with box.session(workdir) as run:

                        def snippet(code: str) -> str | None:
                            cell = run(code)
                            if cell.state != "ok":
                                error = next((o for o in cell.outputs if o.get("output_type") == "error"), {})
                                raise AutotestError(
                                    f"running {code.splitlines()[0] if code else code!r} failed: "
                                    f"{error.get('ename', cell.ename)}: {error.get('evalue', '')}"
                                )
                            return _displayed_text(cell.outputs)

                        yield snippet
                finally:
                    box.release_workdir(workdir)
        except SandboxError as exc:
            raise AutotestError(f"the grading sandbox could not run the source notebook: {exc}") from None

    return session
