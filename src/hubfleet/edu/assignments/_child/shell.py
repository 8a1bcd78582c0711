"""The kernel-like IPython shell of a grading child, and how its cells run.

Student and instructor cells run through IPython's ``run_cell``: the cell semantics, tracebacks and error types of
an IPython kernel. A cell whose execution raised counts as an error even when nothing was displayed (a
submission can silence IPython's traceback display; nbgrader's ``Execute`` does the same).

Test cells (autograder tests) do not go through machinery a submission can change. Before one runs, the state of
:mod:`.hygiene` is put back; then this module parses the cell itself, rewrites its comparisons (:mod:`.guard`),
and runs its statements one by one with the interpreter's own ``exec`` in a ``try`` of its own: the verdict is
whether an exception reached that ``try``, not what was displayed. Between statements the builtins and whatever
the next statement names are put back again; names an instructor's cell defined get back the value that cell gave
them; names that shadow builtins (``len = ...``) are hidden from the test unless the assignment's own notebook
defines them; trace and profile functions cannot be set while a test runs. The last expression's value is
displayed afterwards (partial credit, as nbgrader reads it), with the machinery put back first.

Standard library and IPython only.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import inspect
import json
import linecache
import signal
import sys
import types
from collections.abc import Callable
from typing import Any

from _child import guard
from _child.hygiene import CleanState, defined_names


class CellTimeoutError(BaseException):
    """Raised in a cell that ran out of time (a BaseException, so `except Exception` does not swallow it)."""


class Outputs:
    """The current cell's outputs, as nbformat v4 output dicts, with a cap on their total size."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.items: list[dict] = []
        self.size = 0
        self.truncated = False

    def reset(self) -> None:
        self.items, self.size, self.truncated = [], 0, False

    def add(self, output: dict, size: int) -> None:
        if self.truncated:
            return
        if self.size + size > self.limit:
            self.truncated = True
            self.items.append(
                {"output_type": "stream", "name": "stdout", "text": f"\n[output truncated at {self.limit} bytes]\n"}
            )
            return
        self.size += size
        self.items.append(output)

    def stream(self, name: str, text: str) -> None:
        last = self.items[-1] if self.items else None
        if last is not None and last.get("output_type") == "stream" and last.get("name") == name:
            if self.truncated or self.size + len(text) > self.limit:
                self.add({}, len(text))
                return
            last["text"] += text
            self.size += len(text)
        else:
            self.add({"output_type": "stream", "name": name, "text": text}, len(text))


class Stream:
    """sys.stdout / sys.stderr of a cell: text goes into the cell's outputs."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, name: str, outputs: Outputs) -> None:
        self.name = name
        self.outputs = outputs

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        if text:
            self.outputs.stream(self.name, text)
        return len(text)

    def writelines(self, lines: list[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        return 1 if self.name == "stdout" else 2

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False


def _size_of(data: dict) -> int:
    return sum(len(v) if isinstance(v, str) else len(json.dumps(v, default=repr)) for v in data.values())


def make_shell(outputs: Outputs) -> Any:
    """An InteractiveShell that reports outputs like an IPython kernel (no prompts, no history file)."""
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets import Type
    from traitlets.config import Config

    class KernelLikeDisplayHook(DisplayHook):
        def start_displayhook(self) -> None:
            self.pending = None

        def write_output_prompt(self) -> None:
            pass

        def write_format_data(self, format_dict: dict, md_dict: dict | None = None) -> None:
            self.pending = {
                "output_type": "execute_result",
                "data": format_dict,
                "metadata": md_dict or {},
                "execution_count": self.prompt_count,
            }

        def finish_displayhook(self) -> None:
            sys.stdout.flush()
            if getattr(self, "pending", None) is not None:
                outputs.add(self.pending, _size_of(self.pending["data"]))
            self.pending = None

    class KernelLikeDisplayPublisher(DisplayPublisher):
        def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kwargs) -> None:
            outputs.add({"output_type": "display_data", "data": data, "metadata": metadata or {}}, _size_of(data))

        def clear_output(self, wait: bool = False) -> None:
            outputs.reset()

    class KernelLikeShell(InteractiveShell):
        displayhook_class = Type(KernelLikeDisplayHook)
        display_pub_class = Type(KernelLikeDisplayPublisher)

        def _showtraceback(self, etype, evalue, stb) -> None:
            outputs.add(
                {"output_type": "error", "ename": etype.__name__, "evalue": str(evalue), "traceback": stb},
                len("\n".join(stb)),
            )

        def enable_gui(self, gui=None) -> None:
            pass

    config = Config()
    config.HistoryManager.enabled = False
    config.HistoryManager.hist_file = ":memory:"
    shell = KernelLikeShell.instance(config=config)
    for colors in ("nocolor", "NoColor"):
        try:
            shell.colors = colors
            break
        except Exception:
            continue
    return shell


def warm_up(shell: Any, outputs: Outputs) -> None:
    """Run a few cells once (IPython loads a lot lazily on the first cell and the first traceback), then reset."""
    sys.stdout, sys.stderr = Stream("stdout", outputs), Stream("stderr", outputs)
    for code in ("pass", "1", "def _warm_up():\n    raise ValueError('warm-up')\n_warm_up()", "print()"):
        shell.run_cell(code, store_history=True)
    runner = CellRunner.__new__(CellRunner)
    runner.shell, runner.outputs = shell, outputs
    runner._format_error(ValueError, ValueError("warm-up"), None)
    shell.display_formatter.format(0.5)
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__
    outputs.reset()
    shell.reset(new_session=True)
    sys.last_type = sys.last_value = sys.last_traceback = None
    if hasattr(sys, "last_exc"):
        sys.last_exc = None


class TestGate:
    """An audit hook (installed once, before any submission runs): nobody adds another audit hook; while a test
    cell runs nobody sets a trace or profile function (which could skip its assertions); and it notes when a
    function's code or defaults are replaced (:class:`~.hygiene.CleanState` then puts them back)."""

    BLOCKED_IN_TESTS = frozenset({"sys.settrace", "sys.setprofile"})

    def __init__(self) -> None:
        self.testing = False
        self._touched = False
        sys.addaudithook(self._hook)

    def _hook(self, event: str, args: tuple) -> None:
        if event == "object.__setattr__":
            if isinstance(args[0], types.FunctionType):
                self._touched = True
        elif event == "sys.addaudithook":
            raise RuntimeError("the grader does not allow audit hooks")
        elif self.testing and event in self.BLOCKED_IN_TESTS:
            raise RuntimeError(f"{event} is not allowed while a test cell runs")

    def functions_touched(self) -> bool:
        """Whether a function's code or defaults were set since the last call."""
        touched, self._touched = self._touched, False
        return touched


class CellRunner:
    """Runs one notebook's cells in the shell; keeps what test cells need between cells."""

    def __init__(
        self,
        shell: Any,
        outputs: Outputs,
        clean: CleanState,
        gate: TestGate,
        *,
        expected_names: frozenset[str],
        user_module: str,
        own_signals: Callable[[], dict[int, Any]],
    ) -> None:
        self.shell = shell
        self.outputs = outputs
        self.clean = clean
        self.gate = gate
        self.expected_names = expected_names
        self.own_signals = own_signals
        self.instructor_values: dict[str, Any] = {}
        self.compare = guard.make_compare(guard.make_foreign_test(expected_names, user_module, clean.read_only))
        self._exec, self._eval, self._compile = builtins.exec, builtins.eval, builtins.compile

    # ------------------------------------------------------------------------------------ student and instructor

    def run_cell(self, source: str, *, instructor: bool) -> tuple[str, str | None]:
        """Run a student or instructor cell through IPython; (status, exception name)."""
        try:
            result = self.shell.run_cell(source, store_history=True)
            error = result.error_in_exec or result.error_before_exec
        except Exception as exc:  # the submission broke IPython's machinery itself (it is put back before tests)
            error = exc
        if error is not None and not any(o.get("output_type") == "error" for o in self.outputs.items):
            self._record_error(type(error), error, None)
        if instructor:
            self._remember_instructor_names(source)
        if error is None:
            return "ok", None
        return ("timeout" if isinstance(error, CellTimeoutError) else "error"), type(error).__name__

    def _remember_instructor_names(self, source: str) -> None:
        """Record the modules, classes and functions an instructor's cell defined (the tests' helpers): test cells
        see them as that cell left them. (Data it defined is the student's to work on, as in nbgrader.)"""
        try:
            tree = ast.parse(self.shell.transform_cell(source))
        except SyntaxError:
            return
        namespace = self.shell.user_ns
        for name in defined_names(tree):
            value = namespace.get(name)
            if isinstance(value, types.ModuleType | type | types.FunctionType):
                self.instructor_values[name] = value
                self.clean.remember(value)

    # ------------------------------------------------------------------------------------------ test cells

    def prepare_test(self) -> int:
        """Put the clean state back; the number of threads still running in this process."""
        return self.clean.before_test(self.own_signals())

    def _protect_names(self) -> dict[str, Any]:
        """Give the instructor's names their values back; hide names shadowing builtins. Returns what was hidden."""
        namespace = self.shell.user_ns
        for name, value in self.instructor_values.items():
            if namespace.get(name) is not value:
                namespace[name] = value
            self.clean.restore_object(value)
        namespace["__builtins__"] = builtins
        namespace[guard.GUARD_NAME] = self.compare
        hidden = {}
        for name in [n for n in namespace if n in self.clean.builtins and n not in self.expected_names]:
            if name not in self.instructor_values and namespace[name] is not self.clean.builtins[name]:
                hidden[name] = namespace.pop(name)
        return hidden

    def run_test(self, source: str) -> tuple[str, str | None]:
        """Run a test cell (see the module docstring); (status, exception name)."""
        shell = self.shell
        shell.execution_count += 1
        count = shell.execution_count - 1
        filename = f"<test cell {count}>"
        try:
            tree = ast.parse(shell.transform_cell(source), filename)
        except SyntaxError as exc:
            self._record_error(SyntaxError, exc, None)
            return "error", "SyntaxError"
        tree = ast.fix_missing_locations(guard.ComparisonGuard().visit(tree))
        linecache.cache[filename] = (len(source), None, source.splitlines(keepends=True), filename)
        last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
        quiet = source.rstrip().endswith(";")
        namespace = shell.user_ns
        hidden = self._protect_names()
        value: Any = None
        error: BaseException | None = None
        self.gate.testing = True
        try:
            for statement in tree.body:
                self.clean.before_statement(statement, namespace)
                self._run(ast.Module(body=[statement], type_ignores=[]), filename, namespace, "exec")
            if last is not None:
                self.clean.before_statement(last, namespace)
                value = self._run(ast.Expression(body=last.value), filename, namespace, "eval")
        except BaseException as exc:  # the verdict: an exception reached us
            error = exc
        finally:
            self.gate.testing = False
            namespace.pop(guard.GUARD_NAME, None)
            for name, shadow in hidden.items():
                namespace.setdefault(name, shadow)
        if error is not None:
            self.clean.before_test(self.own_signals())
            self._record_error(type(error), error, error.__traceback__)
            return ("timeout" if isinstance(error, CellTimeoutError) else "error"), type(error).__name__
        if value is not None and not quiet:
            self.clean.before_test(self.own_signals())
            data, metadata = shell.display_formatter.format(value)
            output = {"output_type": "execute_result", "data": data, "metadata": metadata, "execution_count": count}
            self.outputs.add(output, _size_of(data))
        return "ok", None

    def _run(self, tree: ast.Module | ast.Expression, filename: str, namespace: dict, mode: str) -> Any:
        code = self._compile(tree, filename, mode, flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT, dont_inherit=True)
        if code.co_flags & inspect.CO_COROUTINE:
            coroutine = self._eval(code, namespace)
            return asyncio.new_event_loop().run_until_complete(coroutine)
        if mode == "eval":
            return self._eval(code, namespace)
        self._exec(code, namespace)
        return None

    # ------------------------------------------------------------------------------------------ errors

    def _format_error(self, etype: type, value: BaseException, tb: Any) -> list[str]:
        try:
            if isinstance(value, SystemExit | CellTimeoutError) or tb is None:
                return self.shell.InteractiveTB.get_exception_only(etype, value)
            return self.shell.InteractiveTB.structured_traceback(etype, value, tb.tb_next or tb)
        except Exception:
            return [f"{etype.__name__}: {value}"]

    def _record_error(self, etype: type, value: BaseException, tb: Any) -> None:
        stb = self._format_error(etype, value, tb)
        self.outputs.add(
            {"output_type": "error", "ename": etype.__name__, "evalue": str(value), "traceback": stb},
            len("\n".join(stb)),
        )


def own_signal_handlers(on_alarm: Callable) -> dict[int, Any]:
    """The handlers the grading child needs (everything else goes back to the forkserver's)."""
    return {signal.SIGALRM: on_alarm}
