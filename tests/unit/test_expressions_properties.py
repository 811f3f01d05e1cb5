"""Properties of the expression engine: printing round-trips, a reference evaluator agrees.

The trees here are the test's own (tuples), rendered to text by the test and evaluated by an
independent reference evaluator written from TaskRouter's documented semantics: a missing key
is NULL and every comparison with NULL is false; `HAS` wants an array on the left, `IN` and
`NOT IN` an array on the right; `CONTAINS` is a substring test on strings; `true` is not `1`;
`-` between names is subtraction and yields NULL unless both sides are numbers.
"""

from __future__ import annotations

import random
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from escalator.expressions import ExpressionError, parse

# Deterministic: the same examples on every run, nothing read from or written to a database.
_PROPERTY = settings(
    derandomize=True,
    database=None,
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
_SLOW_PROPERTY = settings(_PROPERTY, max_examples=100)
_FAST_PROPERTY = settings(_PROPERTY, max_examples=1000)

Tree = tuple[Any, ...]
NAMES = ("type", "skills", "level", "lang", "tier", "customer", "n", "x_1")
STRINGS = ("", "a", "b", "ab", "billing", "es", "O'Brien", 'say "hi"', "1", "true")
NUMBERS = (0, 1, 2, -1, 1.0, 2.5, -0.5, 10, 1e16, 3e-7)
COMPARATORS = ("==", "!=", "<", "<=", ">", ">=", "CONTAINS", "HAS", "IN", "NOT IN")

# ---------------------------------------------------------------- trees


def _literals() -> st.SearchStrategy[Tree]:
    return st.one_of(
        st.sampled_from(STRINGS),
        st.text(alphabet="ab'c d", max_size=4).filter(lambda s: '"' not in s),
        st.sampled_from(NUMBERS),
        st.integers(-(10**20), 10**20),
        st.floats(allow_nan=False, allow_infinity=False),
        st.booleans(),
    ).map(lambda value: ("lit", value))


def _keys(prefixed: bool) -> st.SearchStrategy[Tree]:
    segment = st.one_of(st.sampled_from(NAMES), st.integers(0, 2))
    first = st.sampled_from(("task", "worker")) if prefixed else st.sampled_from(NAMES)
    second = st.sampled_from(NAMES) if prefixed else segment
    return st.tuples(first, st.lists(segment, max_size=2), second, st.booleans()).map(
        lambda t: ("key", (t[0], t[2], *t[1]) if prefixed or t[3] else (t[0], *t[1]))
    )


def _values(prefixed: bool) -> st.SearchStrategy[Tree]:
    scalar = st.one_of(_literals(), _keys(prefixed))
    return st.one_of(
        scalar,
        st.lists(st.one_of(scalar, st.lists(scalar, max_size=2).map(_array)), max_size=3).map(
            _array
        ),
    )


def _array(items: list[Tree]) -> Tree:
    return ("arr", tuple(items))


def _operands(prefixed: bool) -> st.SearchStrategy[Tree]:
    value = _values(prefixed)
    rest = st.lists(st.tuples(st.sampled_from("+-"), value), min_size=1, max_size=2)
    return st.one_of(value, st.tuples(value, rest).map(lambda t: ("arith", t[0], tuple(t[1]))))


def _comparisons(prefixed: bool) -> st.SearchStrategy[Tree]:
    keys, values, operands = _keys(prefixed), _values(prefixed), _operands(prefixed)
    # Mostly a key on the left and a literal on the right, the shape that finds quirks.
    left = st.one_of(keys, keys, keys, operands)
    right = st.one_of(_literals(), _literals(), operands)
    # The grammar wants an array or a key on the right of IN.
    arrays = st.one_of(keys, values.filter(_is_array))
    ordinary = st.tuples(st.sampled_from(COMPARATORS[:8]), left, right)
    membership = st.tuples(st.sampled_from(COMPARATORS[8:]), left, arrays)
    return st.one_of(ordinary, membership).map(lambda t: ("cmp", *t))


def _is_array(tree: Tree) -> bool:
    return tree[0] == "arr"


def _trees(prefixed: bool = False) -> st.SearchStrategy[Tree]:
    return st.recursive(
        _comparisons(prefixed),
        lambda children: st.tuples(
            st.sampled_from(("AND", "OR")), st.lists(children, min_size=2, max_size=3)
        ).map(lambda t: (t[0], tuple(t[1]))),
        max_leaves=6,
    )


# ---------------------------------------------------------------- rendering


def _number_text(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    digits = format(Decimal(repr(value)), "f")
    return digits if "." in digits else digits + ".0"


def _literal_text(value: object, quote: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return _number_text(value)
    assert isinstance(value, str)
    if quote in value:
        quote = "'" if quote == '"' else '"'
    return f"{quote}{value}{quote}"


def _key_text(path: tuple[Any, ...], zeros: str = "") -> str:
    text = path[0]
    for part in path[1:]:
        text += f"[{zeros}{part}]" if isinstance(part, int) else f".{part}"
    return text


class Style:
    """Random but valid formatting choices: spacing, keyword case, quotes, extra parentheses."""

    def __init__(self, seed: int) -> None:
        self._random = random.Random(seed)

    def space(self, required: bool) -> str:
        options = (" ", "  ", "\t", "\n ") if required else ("", " ", "  ")
        return self._random.choice(options)

    def word(self, word: str) -> str:
        return self._random.choice((word, word.lower(), word.title()))

    def quote(self) -> str:
        return self._random.choice("'\"")

    def zeros(self) -> str:
        return self._random.choice(("", "0"))

    def extra_parentheses(self) -> bool:
        return self._random.random() < 0.5


def _render(tree: Tree, style: Style) -> str:
    kind = tree[0]
    if kind == "lit":
        value = tree[1]
        if isinstance(value, bool):
            return style.word(_literal_text(value, "'").upper())
        return _literal_text(value, style.quote())
    if kind == "key":
        return _key_text(tree[1], style.zeros())
    if kind == "arr":
        items = [_render(item, style) for item in tree[1]]
        return "[" + ("," + style.space(False)).join(items) + "]"
    if kind == "arith":
        text = _render(tree[1], style)
        for sign, operand in tree[2]:
            text += f"{style.space(False)}{sign} {_render(operand, style)}"
        return text
    if kind == "cmp":
        _, operator, left, right = tree
        keyword = operator[0].isalpha()
        space = style.space(required=keyword)
        op = " ".join(style.word(part) for part in operator.split())
        text = f"{_render(left, style)}{space}{op}{style.space(required=keyword)}"
        text += _render(right, style)
        return f"({text})" if style.extra_parentheses() else text
    joiner = style.space(True) + style.word(kind) + style.space(True)
    parts = []
    for child in tree[1]:
        needs = kind == "AND" and child[0] == "OR"
        text = _render(child, style)
        parts.append(f"({text})" if needs or (child[0] in ("AND", "OR") and kind == "OR") else text)
    return joiner.join(parts)


def _flatten(tree: Tree) -> list[Tree]:
    if tree[0] in ("AND", "OR"):
        return [
            leaf
            for child in tree[1]
            for leaf in (_flatten(child) if child[0] == tree[0] else [child])
        ]
    return [tree]


def _canonical(tree: Tree) -> str:
    """The printer's documented form: single spaces, upper-case keywords, minimal parentheses."""
    kind = tree[0]
    if kind == "lit":
        return _literal_text(tree[1], "'")
    if kind == "key":
        return _key_text(tree[1])
    if kind == "arr":
        return "[" + ", ".join(_canonical(item) for item in tree[1]) + "]"
    if kind == "arith":
        return _canonical(tree[1]) + "".join(f" {s} {_canonical(o)}" for s, o in tree[2])
    if kind == "cmp":
        return f"{_canonical(tree[2])} {tree[1]} {_canonical(tree[3])}"
    return f" {kind} ".join(
        f"({_canonical(c)})" if kind == "AND" and c[0] == "OR" else _canonical(c)
        for c in _flatten(tree)
    )


# ---------------------------------------------------------------- reference evaluator


def _is_number(value: object) -> bool:
    return type(value) in (int, float)


def _same(left: object, right: object) -> bool:
    if left is None or right is None:
        return False
    if _is_number(left) and _is_number(right):
        return left == right
    if isinstance(left, list) and isinstance(right, list):
        pairs = zip(left, right, strict=False)
        return len(left) == len(right) and all(_same(a, b) for a, b in pairs)
    if isinstance(left, dict) and isinstance(right, dict):
        return set(left) == set(right) and all(_same(left[k], right[k]) for k in left)
    return type(left) is type(right) and left == right


def _get(root: Any, path: tuple[Any, ...]) -> object:
    for part in path:
        in_list = isinstance(part, int) and isinstance(root, list) and part < len(root)
        if not (in_list or (isinstance(part, str) and isinstance(root, dict) and part in root)):
            return None
        root = root[part]
    return root


def _value(tree: Tree, task: dict[str, Any], worker: dict[str, Any] | None) -> object:
    kind = tree[0]
    if kind == "lit":
        return tree[1]
    if kind == "key":
        path = tree[1]
        if worker is None:
            return _get(task, path)
        return _get(task if path[0] == "task" else worker, path[1:])
    if kind == "arr":
        return [_value(item, task, worker) for item in tree[1]]
    total = _value(tree[1], task, worker)
    for sign, operand in tree[2]:
        other = _value(operand, task, worker)
        if not (_is_number(total) and _is_number(other)):
            return None
        total = total + other if sign == "+" else total - other  # type: ignore[operator]
    return total


def _holds(operator: str, left: Any, right: Any) -> bool:
    if left is None or right is None:
        return False
    if operator in ("==", "!="):
        return _same(left, right) is (operator == "==")
    if operator in ("<", "<=", ">", ">="):
        comparable = (_is_number(left) and _is_number(right)) or (
            type(left) is str and type(right) is str
        )
        if not comparable:
            return False
        return {
            "<": left < right,
            "<=": left < right or left == right,
            ">": left > right,
            ">=": left > right or left == right,
        }[operator]
    if operator == "CONTAINS":
        return type(left) is str and type(right) is str and right in left
    if operator == "HAS":
        return isinstance(left, list) and any(_same(item, right) for item in left)
    if not isinstance(right, list):
        return False
    found = any(_same(left, item) for item in right)
    return found if operator == "IN" else not found


def _reference(tree: Tree, task: dict[str, Any], worker: dict[str, Any] | None = None) -> bool:
    kind = tree[0]
    if kind == "AND":
        return all(_reference(child, task, worker) for child in tree[1])
    if kind == "OR":
        return any(_reference(child, task, worker) for child in tree[1])
    _, operator, left, right = tree
    return _holds(operator, _value(left, task, worker), _value(right, task, worker))


# ---------------------------------------------------------------- attributes


def _literal_values(tree: Any) -> list[object]:
    if isinstance(tree, tuple) and tree and tree[0] == "lit":
        return [tree[1]]
    if isinstance(tree, tuple):
        return [value for part in tree for value in _literal_values(part)]
    return []


def _attributes(tree: Tree) -> st.SearchStrategy[dict[str, Any]]:
    """JSON objects whose values are often the tree's own literals, so comparisons can hold."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.sampled_from(NUMBERS),
        st.sampled_from(STRINGS),
        st.sampled_from(_literal_values(tree) or [0]),
    )
    json = st.recursive(
        scalars,
        lambda inner: st.one_of(
            st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(NAMES), inner, max_size=3)
        ),
        max_leaves=6,
    )
    return st.dictionaries(st.sampled_from(NAMES), json, max_size=len(NAMES))


# ---------------------------------------------------------------- properties

_TREES = _trees()
_PREFIXED_TREES = _trees(prefixed=True)
_SEEDS = st.integers(0, 2**32)


@_PROPERTY
@given(tree=_TREES, seed=_SEEDS)
def test_print_then_parse_gives_an_equal_expression(tree: Tree, seed: int) -> None:
    first = _render(tree, Style(seed))
    second = _render(tree, Style(seed + 1))
    expression = parse(first)
    printed = expression.to_text()
    assert printed == _canonical(tree)
    assert parse(printed) == expression == parse(second)
    assert parse(printed).to_text() == printed
    assert str(expression) == printed


@_PROPERTY
@given(tree=_PREFIXED_TREES, seed=_SEEDS)
def test_printing_round_trips_in_prefixes_mode(tree: Tree, seed: int) -> None:
    expression = parse(_render(tree, Style(seed)), require_prefixes=True)
    printed = expression.to_text()
    assert parse(printed, require_prefixes=True) == expression
    assert parse(printed) != expression  # the mode is part of the expression


@_SLOW_PROPERTY
@given(tree=_TREES, seed=_SEEDS, data=st.data())
def test_evaluation_agrees_with_the_reference(tree: Tree, seed: int, data: st.DataObject) -> None:
    expression = parse(_render(tree, Style(seed)))
    for task in data.draw(st.lists(_attributes(tree), min_size=1, max_size=4)):
        assert expression.matches(task) is _reference(tree, task), task


@_SLOW_PROPERTY
@given(tree=_PREFIXED_TREES, seed=_SEEDS, data=st.data())
def test_prefixed_evaluation_agrees_with_the_reference(
    tree: Tree, seed: int, data: st.DataObject
) -> None:
    expression = parse(_render(tree, Style(seed)), require_prefixes=True)
    task, worker = data.draw(st.tuples(_attributes(tree), _attributes(tree)))
    assert expression.matches(task, worker=worker) is _reference(tree, task, worker)


_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from((0, 1, 1.0, 2, 2.5, -1, 0.0)),
    st.sampled_from(("", "a", "ab", "b", "1", "true")),
)
_VALUES = st.one_of(_SCALARS, st.lists(_SCALARS, max_size=3))


@_FAST_PROPERTY
@given(
    operator=st.sampled_from(COMPARATORS),
    value=_VALUES,
    literal=_VALUES.filter(lambda v: v is not None),
    missing=st.booleans(),
)
def test_one_comparison_of_every_type_pair_agrees_with_the_reference(
    operator: str, value: object, literal: object, missing: bool
) -> None:
    items = literal if isinstance(literal, list) else [literal]
    right = ("arr", tuple(("lit", v) for v in items if v is not None))
    if operator not in ("IN", "NOT IN") and not isinstance(literal, list):
        right = ("lit", literal)
    tree = ("cmp", operator, ("key", ("k",)), right)
    task = {} if missing else {"k": value}
    assert parse(_canonical(tree)).matches(task) is _reference(tree, task)


_FRAGMENTS = st.sampled_from(
    (
        "a",
        "b.c",
        "d[0]",
        "[1]",
        "[",
        "]",
        "(",
        ")",
        ",",
        " ",
        "'s'",
        '"t"',
        "'",
        '"',
        "1",
        ".5",
        "1.2.3",
        "-",
        "+",
        "==",
        "!=",
        "<",
        ">=",
        "=",
        "!",
        " AND ",
        " or ",
        " NOT ",
        " IN ",
        " has ",
        " CONTAINS ",
        "true",
        "9" * 400,
        "é",
        "²",
        "[²]",
        "\x00",
    )
)


@_PROPERTY
@given(text=st.one_of(st.text(max_size=40), st.lists(_FRAGMENTS, max_size=12).map("".join)))
def test_arbitrary_text_parses_or_raises_expression_error_within_the_text(text: str) -> None:
    try:
        expression = parse(text)
    except ExpressionError as error:
        position, message = error.position, error.message
    else:
        assert parse(expression.to_text()) == expression
        expression.matches({"a": 1, "b": {"c": "s"}, "d": [1]})
        return
    assert 0 <= position <= len(text)
    assert f"position {position}" in message
