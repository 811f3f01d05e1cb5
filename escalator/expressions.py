"""TaskRouter expressions: parse, print canonically, and evaluate against attributes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeGuard, TypeVar

from escalator._expression_parser import (
    Arith,
    Array,
    Compare,
    Const,
    ExpressionError,
    Key,
    Logical,
    Node,
    Operand,
    PathPart,
    parse_tree,
    tree_text,
)

__all__ = ["Expression", "ExpressionError", "parse"]

_Comparable = TypeVar("_Comparable", str, float)


def _lookup(root: Mapping[str, object] | None, path: Sequence[PathPart]) -> object:
    current: object = root
    for part in path:
        if isinstance(part, int):
            if not (isinstance(current, list) and part < len(current)):
                return None
            current = current[part]
        elif isinstance(current, Mapping) and part in current:
            current = current[part]
        else:
            return None
    return current


def _is_number(value: object) -> TypeGuard[float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: object, right: object) -> bool:
    """TaskRouter equality: NULL equals nothing, `true` is not `1`, `1` is `1.0`."""
    if left is None or right is None:
        return False
    if _is_number(left) and _is_number(right):
        return left == right
    if type(left) is not type(right):
        return False
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(map(_equal, left, right))
    if isinstance(left, dict) and isinstance(right, dict):
        return left.keys() == right.keys() and all(_equal(v, right[k]) for k, v in left.items())
    return left == right


def _ordered(operator: str, left: object, right: object) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return _order(operator, left, right)
    if _is_number(left) and _is_number(right):
        return _order(operator, left, right)
    return False


def _order(operator: str, left: _Comparable, right: _Comparable) -> bool:
    # Python compares int and float exactly, without overflow; NaN is neither less nor greater.
    if operator == "<":
        return left < right
    if operator == "<=":
        return left <= right
    if operator == ">":
        return left > right
    return left >= right


def _apply(operator: str, left: object, right: object) -> bool:  # noqa: PLR0911
    if left is None or right is None:
        return False
    if operator == "==":
        return _equal(left, right)
    if operator == "!=":
        return not _equal(left, right)
    if operator in ("<", "<=", ">", ">="):
        return _ordered(operator, left, right)
    if operator == "CONTAINS":
        return isinstance(left, str) and isinstance(right, str) and right in left
    if operator == "HAS":
        # TaskRouter accepts HAS on a string and silently matches nothing.
        return isinstance(left, list) and any(_equal(item, right) for item in left)
    if operator == "IN":
        return isinstance(right, list) and any(_equal(left, item) for item in right)
    return isinstance(right, list) and not any(_equal(left, item) for item in right)


def _arithmetic(operator: str, left: object, right: object) -> object:
    if not (_is_number(left) and _is_number(right)):
        # `skill-level` is `skill - level`: with a string or NULL side it yields NULL.
        return None
    try:
        return left + right if operator == "+" else left - right
    except OverflowError:
        return None


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed TaskRouter expression; equal when the trees are, whatever the spacing or case."""

    text: str = field(compare=False)
    _root: Node
    require_prefixes: bool = False

    @property
    def keys(self) -> frozenset[str]:
        """Every key the expression reads, as written (e.g. `task.skills`, `languages[0]`)."""
        return frozenset(key.text for key in _walk_keys(self._root))

    def to_text(self) -> str:
        """Canonical text: single spaces, upper-case keywords, minimal parentheses."""
        return tree_text(self._root)

    def __str__(self) -> str:
        return self.to_text()

    def matches(
        self, attributes: Mapping[str, object], *, worker: Mapping[str, object] | None = None
    ) -> bool:
        """Whether `attributes` (and, in prefixes mode, `worker`) satisfy the expression."""
        return self._evaluate(self._root, attributes, worker)

    def _evaluate(
        self, node: Node, attributes: Mapping[str, object], worker: Mapping[str, object] | None
    ) -> bool:
        if isinstance(node, Logical):
            if node.operator == "AND":
                return all(self._evaluate(o, attributes, worker) for o in node.operands)
            return any(self._evaluate(o, attributes, worker) for o in node.operands)
        left = self._value(node.left, attributes, worker)
        right = self._value(node.right, attributes, worker)
        return _apply(node.operator, left, right)

    def _value(
        self,
        operand: Operand,
        attributes: Mapping[str, object],
        worker: Mapping[str, object] | None,
    ) -> object:
        if isinstance(operand, Const):
            return operand.value
        if isinstance(operand, Key):
            if not self.require_prefixes:
                return _lookup(attributes, operand.path)
            root = attributes if operand.path[0] == "task" else worker
            return _lookup(root, operand.path[1:])
        if isinstance(operand, Array):
            return [self._value(item, attributes, worker) for item in operand.items]
        value = self._value(operand.first, attributes, worker)
        for sign, item in operand.rest:
            value = _arithmetic(sign, value, self._value(item, attributes, worker))
        return value


def _walk_keys(node: Node | Operand) -> Iterator[Key]:
    if isinstance(node, Key):
        yield node
    elif isinstance(node, Logical):
        for operand in node.operands:
            yield from _walk_keys(operand)
    elif isinstance(node, Compare):
        yield from _walk_keys(node.left)
        yield from _walk_keys(node.right)
    elif isinstance(node, Arith):
        yield from _walk_keys(node.first)
        for _, item in node.rest:
            yield from _walk_keys(item)
    elif isinstance(node, Array):
        for element in node.items:
            yield from _walk_keys(element)


def parse(text: str, *, require_prefixes: bool = False) -> Expression:
    """Parse a TaskRouter expression; raise `ExpressionError` with the offending position."""
    root = parse_tree(text, require_prefixes=require_prefixes)
    return Expression(text, root, require_prefixes)
