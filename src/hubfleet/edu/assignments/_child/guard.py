"""Comparisons in test cells that an object of the student's own making cannot fake.

A submission can return, instead of an answer, an object whose ``__eq__`` (or ``__lt__``, ``__contains__`` …)
says yes to anything: ``assert square(3) == 9`` then passes whatever ``square`` computes. In test cells, every
comparison with one operator (``a == b``, ``a < b``, ``a in b`` …) is rewritten to call :func:`make_compare`'s
function, which compares as Python does, except when one side is **foreign** — an instance of a class the
submission made, that the assignment does not define — and the other side is a plain value (a number, a string,
``None``, a list, tuple, dict or set of such): then the plain value's own comparison decides, so a foreign object
equals 9 only if it is an ``int`` (or ``float`` …) subclass whose value is 9. Plain containers holding foreign
objects are compared element by element the same way. Standard library only.
"""

from __future__ import annotations

import ast
import operator
import sys
from collections.abc import Callable, Collection
from typing import Any

GUARD_NAME = "__hubfleet_compare__"
PLAIN_SCALARS = (int, float, complex, bool, str, bytes, bytearray, type(None))
PLAIN_CONTAINERS = (list, tuple, dict, set, frozenset)
PLAIN = PLAIN_SCALARS + PLAIN_CONTAINERS
HEAPTYPE = 1 << 9  # Py_TPFLAGS_HEAPTYPE: a class made at run time (classes in C extensions mostly are not)
MAX_DEPTH = 4

_OPERATOR_NAMES = {
    ast.Eq: "==",
    ast.NotEq: "!=",
    ast.Lt: "<",
    ast.LtE: "<=",
    ast.Gt: ">",
    ast.GtE: ">=",
    ast.In: "in",
    ast.NotIn: "not in",
}
_OPERATORS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_METHODS = {"==": "__eq__", "!=": "__ne__", "<": "__lt__", "<=": "__le__", ">": "__gt__", ">=": "__ge__"}
_REFLECTED = {"==": "__eq__", "!=": "__ne__", "<": "__gt__", "<=": "__ge__", ">": "__lt__", ">=": "__le__"}


class ComparisonGuard(ast.NodeTransformer):
    """Rewrites ``a OP b`` (one operator) to ``__hubfleet_compare__(a, "OP", b)``; chains stay as they are."""

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        if len(node.ops) != 1 or type(node.ops[0]) not in _OPERATOR_NAMES:
            return node
        call = ast.Call(
            func=ast.Name(id=GUARD_NAME, ctx=ast.Load()),
            args=[node.left, ast.Constant(_OPERATOR_NAMES[type(node.ops[0])]), node.comparators[0]],
            keywords=[],
        )
        return ast.copy_location(call, node)


def make_foreign_test(expected_names: Collection[str], user_module: str, read_only: tuple[str, ...]) -> Callable:
    """``is_foreign(value)``: whether ``value``'s class is of the submission's making (see the module docstring).

    Classes named in ``expected_names`` (the ones the assignment's own notebook defines) are the student's to
    write and count as plain; so do classes written in C and classes that live, under their own name, in a module
    imported from a read-only location (``read_only`` prefixes)."""
    expected = frozenset(expected_names)
    trusted: dict[type, bool] = {}

    def resolves(cls: type) -> bool:
        module = sys.modules.get(cls.__module__)
        origin = getattr(module, "__file__", None)
        if module is None or (origin is not None and not str(origin).startswith(read_only)):
            return False
        found: Any = module
        for part in cls.__qualname__.split("."):
            found = getattr(found, part, None)
        return found is cls

    def is_foreign(value: Any) -> bool:
        cls = type(value)
        verdict = trusted.get(cls)
        if verdict is None:
            if cls in PLAIN or not cls.__flags__ & HEAPTYPE:
                verdict = True
            elif cls.__module__ == user_module:
                verdict = cls.__name__ in expected
            else:
                verdict = resolves(cls)
            trusted[cls] = verdict
        return not verdict

    return is_foreign


def make_compare(is_foreign: Callable[[Any], bool]) -> Callable[[Any, str, Any], Any]:
    """The function test cells call for each comparison (see the module docstring)."""

    def holds_foreign(value: Any, depth: int) -> bool:
        if is_foreign(value):
            return True
        kind = type(value)
        if depth >= MAX_DEPTH or kind not in PLAIN_CONTAINERS:
            return False
        if kind is dict:
            return any(holds_foreign(k, depth + 1) or holds_foreign(v, depth + 1) for k, v in value.items())
        return any(holds_foreign(item, depth + 1) for item in value)

    def against_plain(left: Any, op: str, right: Any) -> Any:
        """One side foreign, the other plain: the plain side's own comparison decides."""
        plain, odd = (right, left) if is_foreign(left) else (left, right)
        method = _METHODS[op] if plain is left else _REFLECTED[op]
        result = getattr(type(plain), method)(plain, odd)
        if result is NotImplemented:
            if op in ("==", "!="):
                return op == "!="
            raise TypeError(f"'{op}' is not supported between {type(left).__name__!r} and {type(right).__name__!r}")
        return result

    def equal(left: Any, right: Any, depth: int) -> bool:
        """Structural equality of plain containers that hold foreign objects somewhere."""
        left_foreign, right_foreign = is_foreign(left), is_foreign(right)
        if left_foreign or right_foreign:
            if left_foreign and right_foreign:
                return bool(left == right)
            plain = right if left_foreign else left
            return type(plain) in PLAIN and against_plain(left, "==", right) is True
        kind = type(left)
        if depth >= MAX_DEPTH or kind is not type(right) or kind not in PLAIN_CONTAINERS:
            return bool(left == right)
        if kind is dict:
            if holds_foreign(list(left), depth) or holds_foreign(list(right), depth) or left.keys() != right.keys():
                return False
            return all(equal(value, right[key], depth + 1) for key, value in left.items())
        if kind in (set, frozenset):
            return not (holds_foreign(left, depth) or holds_foreign(right, depth)) and left == right
        return len(left) == len(right) and all(equal(a, b, depth + 1) for a, b in zip(left, right, strict=True))

    def compare(left: Any, op: str, right: Any) -> Any:
        if op in ("in", "not in"):
            if type(right) in PLAIN_CONTAINERS and (is_foreign(left) or holds_foreign(right, 1)):
                found = any(equal(left, item, 1) for item in right)
            else:
                found = left in right
            return found if op == "in" else not found
        left_foreign, right_foreign = is_foreign(left), is_foreign(right)
        if left_foreign != right_foreign and type(right if left_foreign else left) in PLAIN:
            return against_plain(left, op, right)
        plain_containers = not (left_foreign or right_foreign) and type(left) in PLAIN_CONTAINERS
        if plain_containers and op in ("==", "!=") and (holds_foreign(left, 0) or holds_foreign(right, 0)):
            same = equal(left, right, 0)
            return same if op == "==" else not same
        return _OPERATORS[op](left, right)

    return compare
