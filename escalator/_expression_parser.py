"""The expression grammar: tokenizer, recursive-descent parser, syntax tree and printer."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Literal, TypeAlias

__all__ = [
    "PREFIXES",
    "Arith",
    "Array",
    "Compare",
    "Const",
    "ExpressionError",
    "Key",
    "Logical",
    "Node",
    "Operand",
    "PathPart",
    "Value",
    "parse_tree",
    "tree_text",
]

_KEYWORDS = frozenset({"AND", "OR", "NOT", "IN", "HAS", "CONTAINS"})
_SYMBOLS = ("==", "!=", "<=", ">=", "<", ">", "(", ")", "[", "]", ",", "+", "-")
_COMPARATORS = frozenset({"==", "!=", "<", "<=", ">", ">=", "CONTAINS", "HAS", "IN", "NOT IN"})
PREFIXES = ("task", "worker")
_DIGITS = frozenset("0123456789")
# Parentheses and arrays nested deeper than this are refused, which bounds recursion;
# TaskRouter documents no nesting limit of its own.
_MAX_DEPTH = 50

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


@dataclass(frozen=True, slots=True, eq=False)
class Const:
    """A literal: string, integer, float or boolean."""

    value: str | int | float | bool

    def __eq__(self, other: object) -> bool:
        # `true` is not `1` and `1` is not `1.0`: literals of different types differ.
        return isinstance(other, Const) and _typed(self.value) == _typed(other.value)

    def __hash__(self) -> int:
        return hash(_typed(self.value))


def _typed(value: object) -> tuple[type, object]:
    return type(value), value


@dataclass(frozen=True, slots=True)
class Key:
    """An attribute path such as `customer.langs[1]`; `text` and `position` as written."""

    path: tuple[PathPart, ...]
    text: str = field(compare=False)
    position: int = field(compare=False)


@dataclass(frozen=True, slots=True)
class Array:
    """An array literal."""

    items: tuple[Operand, ...]


@dataclass(frozen=True, slots=True)
class Arith:
    """`first` then each `(operator, operand)` of `rest`, left to right."""

    first: Value
    rest: tuple[tuple[Literal["+", "-"], Value], ...]


@dataclass(frozen=True, slots=True)
class Compare:
    """`left operator right`, the operator one of `==`, `!=`, `<`, ..., `IN`, `NOT IN`."""

    operator: str
    left: Operand
    right: Operand


@dataclass(frozen=True, slots=True)
class Logical:
    """Two or more operands; chains of one operator are flattened, so grouping is canonical."""

    operator: Literal["AND", "OR"]
    operands: tuple[Node, ...]


Value: TypeAlias = "Const | Key | Array"
Operand: TypeAlias = "Const | Key | Array | Arith"
Node: TypeAlias = "Compare | Logical"


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
        elif char in _DIGITS or (char == "." and text[i + 1 : i + 2] in _DIGITS):
            start = i
            while i < length and (text[i] in _DIGITS or text[i] == "."):
                i += 1
            yield _number_token(text[start:i], start)
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


def _number_token(literal: str, start: int) -> _Token:
    try:
        number: int | float = float(literal) if "." in literal else int(literal)
    except ValueError:
        raise ExpressionError(f"invalid number '{literal}' at position {start}", start) from None
    if isinstance(number, float) and math.isinf(number):
        raise ExpressionError(f"number '{literal}' at position {start} is out of range", start)
    return _Token("number", literal, start, number)


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
        while (end := _index_end(text, i)) > 0:
            path.append(int(text[i + 1 : end]))
            i = end + 1
        if i + 1 < length and text[i] == "." and _is_key_start(text[i + 1]):
            i += 1
            continue
        return tuple(path), i


def _index_end(text: str, start: int) -> int:
    """Return the offset of the `]` closing an integer index at `start`, or -1."""
    if not text.startswith("[", start):
        return -1
    end = text.find("]", start)
    inner = text[start + 1 : end] if end > 0 else ""
    return end if inner and _DIGITS.issuperset(inner) else -1


class _Parser:
    def __init__(self, text: str, *, require_prefixes: bool) -> None:
        self._tokens = list(_tokenize(text))
        self._index = 0
        self._depth = 0
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

    def _enter(self) -> None:
        self._depth += 1
        if self._depth > _MAX_DEPTH:
            position = self._tokens[self._index - 1].position
            raise ExpressionError(
                f"nesting deeper than {_MAX_DEPTH} at position {position}", position
            )

    def parse(self) -> Node:
        if self._at_end():
            raise ExpressionError("empty expression at position 0", 0)
        node = self._logical("OR")
        if not self._at_end():
            raise self._unexpected("AND, OR or the end of the expression")
        return node

    def _logical(self, operator: Literal["AND", "OR"]) -> Node:
        operand = self._term if operator == "AND" else lambda: self._logical("AND")
        operands = [operand()]
        while self._accept("keyword", operator):
            operands.append(operand())
        if len(operands) == 1:
            return operands[0]
        flat: list[Node] = []
        for node in operands:
            # `(a OR b) OR c` is `a OR b OR c`: one canonical tree for each meaning.
            if isinstance(node, Logical) and node.operator == operator:
                flat.extend(node.operands)
            else:
                flat.append(node)
        return Logical(operator, tuple(flat))

    def _term(self) -> Node:
        if self._accept("symbol", "("):
            self._enter()
            node = self._logical("OR")
            if not self._accept("symbol", ")"):
                raise self._unexpected("')'")
            self._depth -= 1
            return node
        return self._comparison()

    def _comparison(self) -> Node:
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
        if operator in ("IN", "NOT IN") and not isinstance(right, Array | Key):
            raise ExpressionError(
                f"{operator} needs an array on its right at position {token.position}",
                token.position,
            )
        return Compare(operator, left, right)

    def _additive(self) -> Operand:
        first = self._operand()
        rest: list[tuple[Literal["+", "-"], Value]] = []
        while self._current.kind == "symbol" and self._current.text in ("+", "-"):
            operator: Literal["+", "-"] = "+" if self._advance().text == "+" else "-"
            rest.append((operator, self._operand()))
        return Arith(first, tuple(rest)) if rest else first

    def _operand(self) -> Value:
        token = self._current
        if token.kind in ("string", "number", "bool"):
            self._advance()
            assert isinstance(token.value, str | int | float)
            return Const(token.value)
        if token.kind == "symbol" and token.text == "-" and self._peek_kind() == "number":
            self._advance()
            number = self._advance().value
            assert isinstance(number, int | float)
            return Const(-number)
        if token.kind == "key":
            self._advance()
            path = token.value
            assert isinstance(path, tuple)
            if self._require_prefixes and not (
                len(path) > 1 and path[0] in PREFIXES and isinstance(path[1], str)
            ):
                raise ExpressionError(
                    f"key '{token.text}' at position {token.position} must start with"
                    " 'task.' or 'worker.'",
                    token.position,
                )
            return Key(path, token.text, token.position)
        if self._accept("symbol", "["):
            self._enter()
            items: list[Operand] = []
            if not self._accept("symbol", "]"):
                items.append(self._operand())
                while self._accept("symbol", ","):
                    items.append(self._operand())
                if not self._accept("symbol", "]"):
                    raise self._unexpected("',' or ']'")
            self._depth -= 1
            return Array(tuple(items))
        raise self._unexpected("a key, a literal or an array")

    def _peek_kind(self) -> str:
        return self._tokens[min(self._index + 1, len(self._tokens) - 1)].kind


def tree_text(node: Node | Operand) -> str:
    """The canonical text of a tree: single spaces, upper-case keywords, minimal parentheses."""
    if isinstance(node, Logical):
        # AND binds tighter than OR: only an OR inside an AND needs parentheses.
        return f" {node.operator} ".join(
            f"({tree_text(o)})" if isinstance(o, Logical) and o.operator == "OR" else tree_text(o)
            for o in node.operands
        )
    if isinstance(node, Compare):
        return f"{tree_text(node.left)} {node.operator} {tree_text(node.right)}"
    if isinstance(node, Arith):
        return tree_text(node.first) + "".join(f" {op} {tree_text(v)}" for op, v in node.rest)
    if isinstance(node, Array):
        return "[" + ", ".join(tree_text(item) for item in node.items) + "]"
    if isinstance(node, Key):
        return "".join(
            f"[{part}]" if isinstance(part, int) else f".{part}" if i else part
            for i, part in enumerate(node.path)
        )
    return _print_literal(node.value)


def _print_literal(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        # No exponent in the grammar: write every digit, and a point so it stays a float.
        digits = format(Decimal(repr(value)), "f")
        return digits if "." in digits else f"{digits}.0"
    quote = "'" if "'" not in value else '"'
    if quote in value:
        raise ValueError("a string literal cannot hold both kinds of quote")
    return f"{quote}{value}{quote}"


def parse_tree(text: str, *, require_prefixes: bool) -> Node:
    """The syntax tree of `text`; raise `ExpressionError` with the offending position."""
    return _Parser(text, require_prefixes=require_prefixes).parse()
