"""TaskRouter expressions: tokenizer, recursive-descent parser and evaluator."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

__all__ = ["Expression", "ExpressionError", "parse"]

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "HAS", "CONTAINS"})
_SYMBOLS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", "+", "-")
_COMPARATORS = frozenset({"==", "!=", "<", "<=", ">", ">=", "CONTAINS", "HAS", "IN", "NOT IN"})
_PREFIXES = ("task", "worker")

PathPart: TypeAlias = "str | int"


class ExpressionError(ValueError):
    """An expression TaskRouter would refuse; `position` is the 0-based offset in the text."""

    def __init__(self, message: str, position: int) -> None:
        super().__init__(message)
        self.message = message
        self.position = position


@dataclass(frozen=True, slots=True)
class _Token:
    kind: Literal["string", "number", "bool", "key", "keyword", "symbol", "end"]
    text: str
    position: int
    value: object = None


@dataclass(frozen=True, slots=True)
class _Const:
    value: object


@dataclass(frozen=True, slots=True)
class _Key:
    path: tuple[PathPart, ...]
    text: str
    position: int


@dataclass(frozen=True, slots=True)
class _Array:
    items: tuple[_Operand, ...]


@dataclass(frozen=True, slots=True)
class _Arith:
    operator: Literal["+", "-"]
    left: _Operand
    right: _Operand


@dataclass(frozen=True, slots=True)
class _Compare:
    operator: str
    left: _Operand
    right: _Operand


@dataclass(frozen=True, slots=True)
class _Logical:
    operator: Literal["AND", "OR"]
    left: _Node
    right: _Node


_Operand: TypeAlias = "_Const | _Key | _Array | _Arith"
_Node: TypeAlias = "_Compare | _Logical"


def _is_key_start(char: str) -> bool:
    return char.isalpha() or char == "_"


def _is_key_char(char: str) -> bool:
    return char.isalnum() or char == "_"


def _tokenize(text: str) -> Iterator[_Token]:
    i = 0
    length = len(text)
    while i < length:
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "'\"":
            end = text.find(char, i + 1)
            if end < 0:
                raise ExpressionError(f"unterminated string starting at position {i}", i)
            yield _Token("string", text[i : end + 1], i, text[i + 1 : end])
            i = end + 1
        elif char.isdigit() or (char == "." and i + 1 < length and text[i + 1].isdigit()):
            start = i
            while i < length and (text[i].isdigit() or text[i] == "."):
                i += 1
            literal = text[start:i]
            try:
                number: int | float = float(literal) if "." in literal else int(literal)
            except ValueError:
                raise ExpressionError(
                    f"invalid number '{literal}' at position {start}", start
                ) from None
            yield _Token("number", literal, start, number)
        elif _is_key_start(char):
            token, i = _word_token(text, i)
            yield token
        else:
            symbol = next((s for s in _SYMBOLS if text.startswith(s, i)), None)
            if symbol is None:
                raise ExpressionError(f"unexpected character '{char}' at position {i}", i)
            yield _Token("symbol", symbol, i)
            i += len(symbol)
    yield _Token("end", "", length)


def _word_token(text: str, start: int) -> tuple[_Token, int]:
    """Read a keyword, a boolean or a key starting at `start`."""
    path, end = _read_key(text, start)
    word = text[start:end]
    if len(path) == 1 and word.upper() in _KEYWORDS:
        return _Token("keyword", word.upper(), start), end
    if len(path) == 1 and word.lower() in ("true", "false"):
        return _Token("bool", word, start, word.lower() == "true"), end
    return _Token("key", word, start, path), end


def _read_key(text: str, i: int) -> tuple[tuple[PathPart, ...], int]:
    """Read a dotted key with `[i]` indexes from offset `i`; return its path and end offset."""
    length = len(text)
    path: list[PathPart] = []
    while True:
        segment_start = i
        while i < length and _is_key_char(text[i]):
            i += 1
        path.append(text[segment_start:i])
        while i < length and text[i] == "[" and _index_end(text, i) > 0:
            end = _index_end(text, i)
            path.append(int(text[i + 1 : end]))
            i = end + 1
        if i + 1 < length and text[i] == "." and _is_key_start(text[i + 1]):
            i += 1
            continue
        return tuple(path), i


def _index_end(text: str, start: int) -> int:
    """Return the offset of the `]` closing an integer index at `start`, or -1."""
    end = text.find("]", start)
    inner = text[start + 1 : end] if end > 0 else ""
    return end if inner.isdigit() else -1


class _Parser:
    def __init__(self, text: str, *, require_prefixes: bool) -> None:
        self._tokens = list(_tokenize(text))
        self._index = 0
        self._require_prefixes = require_prefixes

    @property
    def _current(self) -> _Token:
        return self._tokens[self._index]

    def _advance(self) -> _Token:
        token = self._tokens[self._index]
        self._index += 1
        return token

    def _accept(self, kind: str, text: str) -> bool:
        token = self._current
        if token.kind == kind and token.text == text:
            self._index += 1
            return True
        return False

    def _unexpected(self, expected: str) -> ExpressionError:
        token = self._current
        found = "end of expression" if token.kind == "end" else f"'{token.text}'"
        return ExpressionError(
            f"unexpected {found} at position {token.position}: expected {expected}",
            token.position,
        )

    def _at_end(self) -> bool:
        return self._current.kind == "end"

    def parse(self) -> _Node:
        if self._at_end():
            raise ExpressionError("empty expression at position 0", 0)
        node = self._or()
        if not self._at_end():
            raise self._unexpected("AND, OR or the end of the expression")
        return node

    def _or(self) -> _Node:
        node = self._and()
        while self._accept("keyword", "OR"):
            node = _Logical("OR", node, self._and())
        return node

    def _and(self) -> _Node:
        node = self._term()
        while self._accept("keyword", "AND"):
            node = _Logical("AND", node, self._term())
        return node

    def _term(self) -> _Node:
        if self._accept("symbol", "("):
            node = self._or()
            if not self._accept("symbol", ")"):
                raise self._unexpected("')'")
            return node
        return self._comparison()

    def _comparison(self) -> _Node:
        left = self._additive()
        token = self._current
        if token.kind == "keyword" and token.text == "NOT":
            self._advance()
            if not self._accept("keyword", "IN"):
                raise self._unexpected("IN after NOT")
            operator = "NOT IN"
        elif token.text in _COMPARATORS and token.kind in ("symbol", "keyword"):
            operator = self._advance().text
        else:
            raise self._unexpected("a comparison operator")
        right = self._additive()
        if operator in ("IN", "NOT IN") and not isinstance(right, _Array | _Key):
            raise ExpressionError(
                f"{operator} needs an array on its right at position {token.position}",
                token.position,
            )
        return _Compare(operator, left, right)

    def _additive(self) -> _Operand:
        node = self._operand()
        while self._current.kind == "symbol" and self._current.text in ("+", "-"):
            operator: Literal["+", "-"] = "+" if self._advance().text == "+" else "-"
            node = _Arith(operator, node, self._operand())
        return node

    def _operand(self) -> _Operand:
        token = self._current
        if token.kind in ("string", "number", "bool"):
            self._advance()
            return _Const(token.value)
        if token.kind == "symbol" and token.text == "-" and self._peek_kind() == "number":
            self._advance()
            number = self._advance().value
            assert isinstance(number, int | float)
            return _Const(-number)
        if token.kind == "key":
            self._advance()
            path = token.value
            assert isinstance(path, tuple)
            if self._require_prefixes and (len(path) < 2 or path[0] not in _PREFIXES):
                raise ExpressionError(
                    f"key '{token.text}' at position {token.position} must start with"
                    " 'task.' or 'worker.'",
                    token.position,
                )
            return _Key(path, token.text, token.position)
        if self._accept("symbol", "["):
            items: list[_Operand] = []
            if not self._accept("symbol", "]"):
                items.append(self._operand())
                while self._accept("symbol", ","):
                    items.append(self._operand())
                if not self._accept("symbol", "]"):
                    raise self._unexpected("',' or ']'")
            return _Array(tuple(items))
        raise self._unexpected("a key, a literal or an array")

    def _peek_kind(self) -> str:
        return self._tokens[min(self._index + 1, len(self._tokens) - 1)].kind


def _lookup(root: Mapping[str, object] | None, path: Sequence[PathPart]) -> object:
    current: object = root
    for part in path:
        if isinstance(part, int) and isinstance(current, list) and part < len(current):
            current = current[part]
            continue
        if not (isinstance(part, str) and isinstance(current, Mapping) and part in current):
            return None
        current = current[part]
    return current


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _equal(left: object, right: object) -> bool:
    if left is None or right is None:
        return False
    if _is_number(left) and _is_number(right):
        return left == right
    return type(left) is type(right) and left == right


def _ordered(operator: str, left: object, right: object) -> bool:
    if _is_number(left) and _is_number(right):
        a, b = float(left), float(right)  # type: ignore[arg-type]
    elif isinstance(left, str) and isinstance(right, str):
        return _compare_values(operator, left, right)
    else:
        return False
    if math.isnan(a) or math.isnan(b):
        return False
    return _compare_values(operator, a, b)


def _compare_values(operator: str, a: str | float, b: str | float) -> bool:
    if operator == "<":
        return a < b  # type: ignore[operator]
    if operator == "<=":
        return a <= b  # type: ignore[operator]
    if operator == ">":
        return a > b  # type: ignore[operator]
    return a >= b  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class Expression:
    """A parsed TaskRouter expression; evaluate it with `matches`."""

    text: str
    _root: _Node
    require_prefixes: bool = False

    @property
    def keys(self) -> frozenset[str]:
        """Every key the expression reads, as written (e.g. `task.skills`, `languages[0]`)."""
        return frozenset(key.text for key in _walk_keys(self._root))

    def matches(
        self, attributes: Mapping[str, object], *, worker: Mapping[str, object] | None = None
    ) -> bool:
        """Whether `attributes` (and, in prefixes mode, `worker`) satisfy the expression."""
        return self._evaluate(self._root, attributes, worker)

    def _evaluate(
        self, node: _Node, attributes: Mapping[str, object], worker: Mapping[str, object] | None
    ) -> bool:
        if isinstance(node, _Logical):
            left = self._evaluate(node.left, attributes, worker)
            if node.operator == "AND":
                return left and self._evaluate(node.right, attributes, worker)
            return left or self._evaluate(node.right, attributes, worker)
        left_value = self._value(node.left, attributes, worker)
        right_value = self._value(node.right, attributes, worker)
        return _apply(node.operator, left_value, right_value)

    def _value(
        self,
        operand: _Operand,
        attributes: Mapping[str, object],
        worker: Mapping[str, object] | None,
    ) -> object:
        if isinstance(operand, _Const):
            return operand.value
        if isinstance(operand, _Key):
            if not self.require_prefixes:
                return _lookup(attributes, operand.path)
            root = attributes if operand.path[0] == "task" else worker
            return _lookup(root, operand.path[1:])
        if isinstance(operand, _Array):
            return [self._value(item, attributes, worker) for item in operand.items]
        left = self._value(operand.left, attributes, worker)
        right = self._value(operand.right, attributes, worker)
        if not (_is_number(left) and _is_number(right)):
            # `skill-level` is `skill - level`: with a string or NULL side it yields NULL.
            return None
        return left + right if operand.operator == "+" else left - right  # type: ignore[operator]


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


def _walk_keys(node: _Node | _Operand) -> Iterator[_Key]:
    if isinstance(node, _Key):
        yield node
    elif isinstance(node, _Logical | _Compare | _Arith):
        yield from _walk_keys(node.left)
        yield from _walk_keys(node.right)
    elif isinstance(node, _Array):
        for item in node.items:
            yield from _walk_keys(item)


def parse(text: str, *, require_prefixes: bool = False) -> Expression:
    """Parse a TaskRouter expression; raise `ExpressionError` with the offending position."""
    root = _Parser(text, require_prefixes=require_prefixes).parse()
    return Expression(text, root, require_prefixes)
