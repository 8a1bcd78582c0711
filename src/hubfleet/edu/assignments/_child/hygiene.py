"""The forkserver's clean state, and putting it back before (and during) every test cell.

Student code runs in the same interpreter as the tests, as in a Jupyter kernel, so it can change what the tests
rely on: replace IPython's traceback display or display hooks, install AST or input transformers, rebind builtins
(``len``, ``abs`` …), patch library functions the tests call (``numpy.allclose``, ``math.isclose``), register
import hooks or fake modules, leave threads, processes, signal handlers, timers, trace or garbage-collector
callbacks running, or redefine the helpers an instructor's locked cell defined. :class:`CleanState` records, once,
in the forkserver (before any student code exists):

* every imported module's namespace (and the code of every function in it), and the namespaces of IPython's,
  traitlets' and unittest's classes and of this package's;
* the builtins, ``sys``'s hooks (display, except, unraisable, breakpoint), ``sys.meta_path`` / ``path_hooks`` /
  ``path``, garbage-collector callbacks, signal handlers;
* the shell's machinery (traceback handlers, custom exception handlers, compiler, transformers, display hook,
  display publisher and formatters, events).

:meth:`CleanState.before_test` puts all of that back, stops every other process of the sandbox, clears timers and
trace functions and reports the threads still running (the caller then continues in a fresh single-threaded fork).
:meth:`CleanState.before_statement` puts back, between the statements of a test cell, the builtins and the
modules, classes and functions the next statement names. Standard library and IPython only.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import ctypes
import gc
import operator
import os
import signal
import sys
import threading
import types
from collections.abc import Callable, Iterable
from typing import Any

_MISSING = object()
SYS_HOOKS = ("displayhook", "excepthook", "unraisablehook", "breakpointhook")
CLASS_MODULE_PREFIXES = ("IPython.", "traitlets.", "unittest.", "_child.", "matplotlib_inline.")
SHELL_KEEP = frozenset(
    {
        "execution_count",
        "last_execution_succeeded",
        "last_execution_result",
        "_last_traceback",
        "user_ns",
        "user_module",
        "user_ns_hidden",
        "_main_mod_cache",
        "_orig_sys_module_state",
        "_orig_sys_modules_main_name",
        "_orig_sys_modules_main_mod",
        "db",
        "history_manager",
        "history_length",
        "_post_execute",
        "raw_input_original",
        "dir_stack",
    }
)
"""Shell attributes that change in normal use (counters, namespaces, history): left alone."""


class _Namespace:
    """A namespace (a module's dict or a class's mappingproxy) as it was: checked in C-speed loops first."""

    __slots__ = ("keys", "live", "saved", "values")

    def __init__(self, live: Any) -> None:
        self.live = live
        self.saved = dict(live)
        self.keys = tuple(self.saved)
        self.values = tuple(self.saved.values())

    def unchanged(self) -> bool:
        live = self.live
        return (
            len(live) == len(self.keys)
            and all(map(operator.is_, live, self.keys))
            and all(map(operator.is_, live.values(), self.values))
        )


def _snapshot_dict(namespace: dict[str, Any]) -> _Namespace:
    return _Namespace(namespace)


def _restore_dict(record: _Namespace) -> None:
    if record.unchanged():
        return
    live = record.live
    for key, value in record.saved.items():
        if live.get(key, _MISSING) is not value:
            live[key] = value


FORK_STATE = ("_active_limbo_lock", "_main_thread", "_shutdown_locks_lock", "_shutdown_locks")
"""What ``threading`` rebinds in a forked process (its at-fork handler)."""


class _Function:
    __slots__ = ("code", "defaults", "function", "kwdefaults")

    def __init__(self, function: types.FunctionType) -> None:
        self.function = function
        self.code = function.__code__
        self.defaults = function.__defaults__
        self.kwdefaults = function.__kwdefaults__

    def restore(self) -> None:
        function = self.function
        if function.__code__ is not self.code:
            function.__code__ = self.code
        if function.__defaults__ is not self.defaults:
            function.__defaults__ = self.defaults
        if function.__kwdefaults__ is not self.kwdefaults:
            function.__kwdefaults__ = self.kwdefaults


def _version_offset() -> int | None:
    """Where CPython keeps a dict's version tag (PEP 509: it changes with every change of the dict), if this
    interpreter has one where 3.11 and 3.12 keep it — checked on a dict of our own."""
    if sys.implementation.name != "cpython" or ctypes.sizeof(ctypes.c_void_p) != 8:
        return None
    offset = 3 * ctypes.sizeof(ctypes.c_void_p)  # after the refcount, the type and ma_used
    probe: dict[str, int] = {}
    address = id(probe) + offset
    used = ctypes.c_ssize_t.from_address(id(probe) + offset - 8)
    tags = [ctypes.c_uint64.from_address(address).value]
    for change in (lambda: probe.__setitem__("a", 1), lambda: probe.__setitem__("a", 2), lambda: probe.pop("a")):
        change()
        tags.append(ctypes.c_uint64.from_address(address).value)
    if len(set(tags)) != len(tags) or used.value != 0:
        return None
    return offset


class _Watch:
    """The namespaces a :class:`CleanState` records, checked at once: every module and class dictionary's version
    tag (read without touching the dictionary's objects, so a forked child copies no page for it), or — where the
    interpreter has no such tag — ``gc.get_referents`` of them all compared object by object. (A function's code and
    defaults are watched by the audit hook instead: setting them is an audited event.)"""

    def __init__(self, state: CleanState) -> None:
        self.size = (len(state.namespaces), len(state.classes))
        class_dicts = [gc.get_referents(vars(cls))[0] for cls, _ in state.classes.values()]
        self.objects = (*(record.live for record in state.namespaces.values()), *class_dicts)
        offset = _version_offset()
        self.tags = [ctypes.c_uint64.from_address(id(d) + offset) for d in self.objects] if offset else None
        self.refresh()

    def _now(self) -> list[Any]:
        if self.tags is not None:
            return [tag.value for tag in self.tags]
        return gc.get_referents(*self.objects)

    def refresh(self) -> None:
        self.expected = self._now()

    def unchanged(self) -> bool:
        now = self._now()
        if self.tags is not None:
            return now == self.expected
        return len(now) == len(self.expected) and all(map(operator.is_, now, self.expected))


class CleanState:
    """What the shell and the interpreter look like before any submission ran (take it in the forkserver)."""

    def __init__(self, shell: Any, read_only: tuple[str, ...], functions_touched: Callable[[], bool]) -> None:
        """``functions_touched()``: whether any function's code or defaults were set since it was last asked."""
        self.shell = shell
        self.functions_touched = functions_touched
        self.read_only = read_only
        self.host_namespace = _namespace_of("self")
        self.modules: dict[str, types.ModuleType] = {
            name: module for name, module in sys.modules.items() if isinstance(module, types.ModuleType)
        }
        self.namespaces: dict[int, tuple[dict, dict]] = {}
        self.functions: dict[int, _Function] = {}
        self.classes: dict[int, tuple[type, _Namespace]] = {}
        self._watch: _Watch | None = None
        user_namespaces = (shell.user_ns, shell.user_global_ns)
        for module in self.modules.values():
            namespace = vars(module)
            if (
                namespace is vars(builtins)
                or namespace is vars(sys)  # changes with every cell (streams, last exception): see _restore_interpreter
                or id(namespace) in self.namespaces
                or any(namespace is ns for ns in user_namespaces)
            ):
                continue
            self.namespaces[id(namespace)] = _snapshot_dict(namespace)
            for value in list(namespace.values()):
                self._note(value, module.__name__)
        self.builtins = dict(vars(builtins))
        self._builtins_record = _Namespace(vars(builtins))
        self.sys_hooks = {name: getattr(sys, name) for name in SYS_HOOKS}
        self.meta_path = list(sys.meta_path)
        self.path_hooks = list(sys.path_hooks)
        self.path = list(sys.path)
        self.importer_cache = dict(sys.path_importer_cache)
        self.gc_callbacks = list(gc.callbacks)
        self.signals = {number: signal.getsignal(number) for number in signal.valid_signals()}
        self.shell_dict = dict(vars(shell))
        self.shell_traits = {key: _copy(value) for key, value in shell._trait_values.items()}
        self.events = {name: list(callbacks) for name, callbacks in shell.events.callbacks.items()}
        self.formatters = dict(shell.display_formatter.formatters)
        self.printers = {
            mime: (dict(f.type_printers), dict(f.deferred_printers), dict(getattr(f, "singleton_printers", {})))
            for mime, f in self.formatters.items()
        }
        self.transformer_lines = _copy(vars(shell.input_transformer_manager))
        self._watch = _Watch(self)

    def _note(self, value: Any, module_name: str) -> None:
        if isinstance(value, types.FunctionType):
            self.functions.setdefault(id(value), _Function(value))
        elif isinstance(value, type) and id(value) not in self.classes:
            owner = getattr(value, "__module__", "") or ""
            if owner == module_name and (owner + ".").startswith(CLASS_MODULE_PREFIXES):
                record = _Namespace(vars(value))
                self.classes[id(value)] = (value, record)
                for attribute in record.values:
                    function = getattr(attribute, "__func__", attribute)
                    if isinstance(function, types.FunctionType):
                        self.functions.setdefault(id(function), _Function(function))

    # ------------------------------------------------------------------------------------------ restoring

    def _restore_class(self, cls: type, record: _Namespace) -> None:
        if record.unchanged():
            return
        live, saved = vars(cls), record.saved
        for key, value in saved.items():
            if live.get(key, _MISSING) is not value:
                setattr(cls, key, value)
        for key in [key for key in live if key not in saved]:
            with contextlib.suppress(AttributeError, TypeError):
                delattr(cls, key)

    def _restore_modules(self) -> None:
        for name, module in self.modules.items():
            if sys.modules.get(name) is not module:
                sys.modules[name] = module
        for name in [name for name in sys.modules if name not in self.modules]:
            if not self._genuine(sys.modules.get(name)):
                del sys.modules[name]
        if self.functions_touched():
            for function in self.functions.values():
                function.restore()
            self.functions_touched()
        if self._watch is None or self._watch.size != (len(self.namespaces), len(self.classes)):
            self._watch = _Watch(self)
        if self._watch.unchanged():
            return
        for record in self.namespaces.values():
            _restore_dict(record)
        for cls, record in self.classes.values():
            self._restore_class(cls, record)
        self._watch.refresh()

    def _genuine(self, module: Any) -> bool:
        """A module imported later from a read-only location (not one the submission made or wrote)."""
        spec = getattr(module, "__spec__", None)
        origin = getattr(spec, "origin", None)
        if not isinstance(module, types.ModuleType) or spec is None or not isinstance(origin, str):
            return False
        return origin in ("built-in", "frozen") or origin.startswith(self.read_only)

    def _restore_builtins(self) -> None:
        if self._builtins_record.unchanged():
            return
        live = vars(builtins)
        _restore_dict(self._builtins_record)
        for key in [key for key in live if key not in self.builtins]:
            del live[key]

    def _restore_interpreter(self) -> None:
        for name, value in self.sys_hooks.items():
            if getattr(sys, name) is not value:
                setattr(sys, name, value)
        for live, saved in ((sys.meta_path, self.meta_path), (sys.path_hooks, self.path_hooks), (sys.path, self.path)):
            if not _same(live, saved):
                live[:] = saved
        cache = sys.path_importer_cache
        if not _same(cache, self.importer_cache):
            cache.clear()
            cache.update(self.importer_cache)
        gc.callbacks[:] = self.gc_callbacks
        sys.settrace(None)
        sys.setprofile(None)
        threading.settrace(None)  # type: ignore[arg-type]
        threading.setprofile(None)  # type: ignore[arg-type]

    def restore_signals(self, own: dict[int, Any]) -> None:
        """Signal handlers back to the clean ones (``own`` overrides some), nothing blocked, no timers but ours."""
        for number, handler in self.signals.items():
            wanted = own.get(number, handler)
            if wanted is not None and signal.getsignal(number) is not wanted:
                with contextlib.suppress(OSError, ValueError, TypeError):
                    signal.signal(number, wanted)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        for timer in (signal.ITIMER_VIRTUAL, signal.ITIMER_PROF):
            signal.setitimer(timer, 0)

    def _restore_shell(self) -> None:
        shell = self.shell
        live = vars(shell)
        for key, value in self.shell_dict.items():
            if key not in SHELL_KEEP and live.get(key, _MISSING) is not value:
                live[key] = value
        for key in [key for key in live if key not in self.shell_dict]:
            if callable(live[key]) or key in ("CustomTB", "custom_exceptions"):
                del live[key]
        traits = shell._trait_values
        for key, value in self.shell_traits.items():
            if not _same(traits.get(key, _MISSING), value):
                traits[key] = _copy(value)
        for name, callbacks in self.events.items():
            shell.events.callbacks[name] = list(callbacks)
        formatter = shell.display_formatter
        formatter.formatters.clear()
        formatter.formatters.update(self.formatters)
        for mime, (types_, deferred, singletons) in self.printers.items():
            f = self.formatters[mime]
            for live_printers, saved in ((f.type_printers, types_), (f.deferred_printers, deferred)):
                if not _same(live_printers, saved):
                    live_printers.clear()
                    live_printers.update(saved)
            if hasattr(f, "singleton_printers") and not _same(f.singleton_printers, singletons):
                f.singleton_printers.clear()
                f.singleton_printers.update(singletons)
        manager = vars(shell.input_transformer_manager)
        for key, value in self.transformer_lines.items():
            if not _same(manager.get(key), value):
                manager[key] = _copy(value)

    def settle(self, own_signals: dict[int, Any]) -> bool:
        """After every cell: signal handlers, timers, trace and profile functions and garbage-collector callbacks
        back to clean, our children reaped. Whether the sandbox is quiet — no other thread in this process and no
        other process but the namespace's init — so that nothing of the submission can run until the next cell
        starts (a test cell may then be sent without the full :meth:`before_test` handshake)."""
        self.restore_signals(own_signals)
        sys.settrace(None)
        sys.setprofile(None)
        if not _same(gc.callbacks, self.gc_callbacks):
            gc.callbacks[:] = self.gc_callbacks
        _reap_children()
        try:
            threads = len(os.listdir("/proc/self/task"))
            me = str(os.getpid())
            others = [p for p in os.listdir("/proc") if p.isdigit() and p not in ("1", me)]
        except OSError:
            return False
        return threads == 1 and not others

    def before_test(self, own_signals: dict[int, Any]) -> int:
        """Everything back to clean; other processes stopped. Returns how many threads (this one included) run."""
        _stop_other_processes(self.host_namespace)
        self._restore_modules()
        self._restore_builtins()
        self._restore_interpreter()
        self._restore_shell()
        self.restore_signals(own_signals)
        try:
            return len(os.listdir("/proc/self/task"))
        except OSError:
            return threading.active_count()

    def before_statement(self, statement: ast.AST, namespace: dict[str, Any]) -> None:
        """The builtins, and whatever modules, classes and functions ``statement`` names, back to clean."""
        self._restore_builtins()
        for chain in _attribute_chains(statement):
            value = namespace.get(chain[0], _MISSING)
            if value is _MISSING:
                value = self.builtins.get(chain[0], _MISSING)
            for attribute in chain[1:]:
                self.restore_object(value)
                value = getattr(value, attribute, _MISSING) if value is not _MISSING else _MISSING
            self.restore_object(value)

    def after_fork(self) -> None:
        """Take, as clean, what ``os.fork`` itself changes in the new process (threading's locks and main thread):
        call it in a forked process before any of the submission's code runs."""
        record = self.namespaces.get(id(vars(threading)))
        if record is not None:
            for key in FORK_STATE:
                if key in record.live:
                    record.saved[key] = record.live[key]
            record.keys = tuple(record.saved)
            record.values = tuple(record.saved.values())
        self._watch.refresh()

    def remember(self, value: Any) -> None:
        """Add an object made after the forkserver started (an instructor cell's function or class) to the state
        that is put back."""
        if isinstance(value, types.FunctionType):
            self.functions.setdefault(id(value), _Function(value))
        elif isinstance(value, type) and id(value) not in self.classes:
            self.classes[id(value)] = (value, _Namespace(vars(value)))
            for attribute in vars(value).values():
                function = getattr(attribute, "__func__", attribute)
                if isinstance(function, types.FunctionType):
                    self.functions.setdefault(id(function), _Function(function))
        elif isinstance(value, types.ModuleType) and id(vars(value)) not in self.namespaces:
            self.namespaces[id(vars(value))] = _snapshot_dict(vars(value))

    def restore_object(self, value: Any) -> None:
        if isinstance(value, types.ModuleType):
            saved = self.namespaces.get(id(vars(value)))
            if saved is not None:
                _restore_dict(saved)
        elif isinstance(value, type):
            saved_class = self.classes.get(id(value))
            if saved_class is not None:
                self._restore_class(*saved_class)
        elif isinstance(value, types.FunctionType):
            function = self.functions.get(id(value))
            if function is not None:
                function.restore()


def _same(live: Any, saved: Any) -> bool:
    """Equal by identity, element by element for lists and dicts (never calls a submission's ``__eq__``)."""
    if type(live) is list and type(saved) is list:
        return len(live) == len(saved) and all(a is b for a, b in zip(live, saved, strict=True))
    if type(live) is dict and type(saved) is dict:
        return live.keys() == saved.keys() and all(live[key] is value for key, value in saved.items())
    return live is saved


def _copy(value: Any) -> Any:
    if isinstance(value, list):
        return list(value)
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    return value


def _namespace_of(pid: str) -> tuple[int, int]:
    info = os.stat(f"/proc/{pid}/ns/pid")
    return info.st_dev, info.st_ino


def may_stop_others(host_namespace: tuple[int, int]) -> bool:
    """Whether this process is a grading sandbox's worker: unprivileged, not PID 1, in a PID namespace other than
    the forkserver's (``host_namespace``). Only there may it kill "every other process": anywhere else
    ``kill(-1)`` would reach every process the caller may signal."""
    try:
        own = _namespace_of("self")
    except OSError:
        return False
    return os.geteuid() != 0 and os.getuid() != 0 and os.getpid() != 1 and own != host_namespace


def _stop_other_processes(host_namespace: tuple[int, int]) -> None:
    """Kill every other process of the sandbox's PID namespace but its init, and reap our children (nothing
    outside a sandbox: see :func:`may_stop_others`)."""
    if not may_stop_others(host_namespace):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(-1, signal.SIGKILL)
    _reap_children()


def _reap_children() -> None:
    """Reap every child that has exited, without waiting for the others."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _attribute_chains(statement: ast.AST) -> Iterable[tuple[str, ...]]:
    """``np.testing.assert_allclose(...)`` → ``("np", "testing", "assert_allclose")``; plain names too."""
    for node in ast.walk(statement):
        parts: list[str] = []
        current: ast.AST = node
        while isinstance(current, ast.Attribute):
            parts.append(current.attr)
            current = current.value
        if isinstance(current, ast.Name) and (parts or isinstance(node, ast.Name)):
            yield (current.id, *reversed(parts))


def defined_names(tree: ast.Module) -> set[str]:
    """Names a cell binds at its top level (assignments, definitions, imports)."""
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            for alias in node.names:
                if alias.name != "*":
                    names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.Assign | ast.AnnAssign | ast.AugAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for inner in ast.walk(target):
                    if isinstance(inner, ast.Name):
                        names.add(inner.id)
    return names
