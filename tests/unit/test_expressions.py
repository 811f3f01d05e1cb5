"""The TaskRouter expression engine: operators, NULL, quirks, errors and prefixes mode."""

from __future__ import annotations

import pytest

from escalator.expressions import ExpressionError, parse

ATTRS: dict[str, object] = {
    "type": "billing",
    "priority": 5,
    "score": 2.5,
    "vip": True,
    "skills": ["billing", "es"],
    "skill": 7,
    "level": 3,
    "skill-level": 99,
    "customer": {"tier": "gold", "langs": ["en", "fr"]},
    "summary": "refund for order 42",
}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("type == 'billing'", True),
        ('type == "sales"', False),
        ("type != 'sales'", True),
        ("priority > 4", True),
        ("priority >= 5", True),
        ("priority < 5", False),
        ("priority <= 5", True),
        ("score > 2.4", True),
        ("priority > -1", True),
        ("vip == true", True),
        ("vip == 1", False),
        ("summary CONTAINS 'refund'", True),
        ("summary contains 'voucher'", False),
        ("skills HAS 'es'", True),
        ("skills has 'fr'", False),
        ("type IN ['billing', 'sales']", True),
        ("type in ['sales']", False),
        ("type NOT IN ['sales']", True),
        ("type not in ['billing']", False),
        ("customer.tier == 'gold'", True),
        ("customer.langs[1] == 'fr'", True),
        ("skills[0] == 'billing'", True),
        ("type == 'billing' AND priority > 9", False),
        ("type == 'billing' and priority > 1", True),
        ("type == 'sales' OR priority > 1", True),
        ("type == 'sales' OR (priority > 1 AND skills HAS 'x')", False),
        ("(type == 'sales' OR priority > 1) AND skills HAS 'es'", True),
        ("1==1", True),
        ("1 == 2", False),
        ("'en' IN customer.langs", True),
    ],
)
def test_operators(text: str, expected: bool) -> None:
    assert parse(text).matches(ATTRS) is expected


@pytest.mark.parametrize(
    "text",
    [
        "missing == 'x'",
        "missing != 'x'",
        "missing > 1",
        "missing IN ['x']",
        "missing NOT IN ['x']",
        "customer.missing.deeper == 1",
        "skills[9] == 'x'",
        "missing HAS 'x'",
        "missing CONTAINS 'x'",
    ],
)
def test_missing_key_is_null_and_every_comparison_with_null_is_false(text: str) -> None:
    assert parse(text).matches(ATTRS) is False


def test_has_on_a_string_matches_nothing() -> None:
    expression = parse("type HAS 'billing'")
    assert expression.matches({"type": "billing"}) is False
    assert expression.matches({"type": ["billing"]}) is True


def test_hyphenated_name_is_subtraction() -> None:
    expression = parse("skill-level == 4")
    assert expression.matches(ATTRS) is True  # 7 - 3, not the "skill-level" key
    assert expression.matches({"skill-level": 4}) is False
    assert parse("skill - level > 0").matches({"skill": "a", "level": 1}) is False
    assert parse("skill-level == 4").keys == frozenset({"skill", "level"})


def test_addition_of_numbers() -> None:
    assert parse("priority + 1 == 6").matches(ATTRS) is True
    assert parse("missing + 1 == 1").matches(ATTRS) is False


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("(type == 'sales'))", "unexpected ')' at position 17", 17),
        ("type == ", "unexpected end of expression at position 8", 8),
        ("type = 'x'", "unexpected character '=' at position 5", 5),
        ("type == 'open", "unterminated string starting at position 8", 8),
        ("type 'x'", "unexpected ''x'' at position 5", 5),
        ("(type == 'x'", "unexpected end of expression at position 12", 12),
        ("type NOT 'x'", "unexpected ''x'' at position 9", 9),
        ("type IN 'x'", "IN needs an array on its right at position 5", 5),
        ("", "empty expression at position 0", 0),
        ("a == [1, 2", "unexpected end of expression at position 10", 10),
    ],
)
def test_errors_name_what_and_where(text: str, message: str, position: int) -> None:
    with pytest.raises(ExpressionError) as raised:
        parse(text)
    assert message in str(raised.value)
    assert raised.value.position == position


def test_prefixes_mode_evaluates_task_and_worker() -> None:
    expression = parse(
        "task.lang IN worker.langs AND worker.level >= task.min_level", require_prefixes=True
    )
    task = {"lang": "fr", "min_level": 2}
    assert expression.matches(task, worker={"langs": ["en", "fr"], "level": 3}) is True
    assert expression.matches(task, worker={"langs": ["en"], "level": 3}) is False
    assert expression.matches(task) is False


def test_prefixes_mode_refuses_bare_keys() -> None:
    with pytest.raises(ExpressionError) as raised:
        parse("task.lang == lang", require_prefixes=True)
    assert raised.value.position == 13
    assert "'task.' or 'worker.'" in str(raised.value)
    assert parse("lang == 'fr'").matches({"lang": "fr"}) is True


def test_prefixes_mode_needs_a_name_after_the_prefix() -> None:
    with pytest.raises(ExpressionError) as raised:
        parse("task[0] == 1", require_prefixes=True)
    assert raised.value.position == 0


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("type=='billing'  and\tpriority>4", "type == 'billing' AND priority > 4"),
        ("(a == 1 or b == 2) and c == 3", "(a == 1 OR b == 2) AND c == 3"),
        ("a == 1 or (b == 2 and c == 3)", "a == 1 OR b == 2 AND c == 3"),
        ("((a == 1))", "a == 1"),
        ("a == 1 AND (b == 2 AND c == 3)", "a == 1 AND b == 2 AND c == 3"),
        ("skill-level == 4", "skill - level == 4"),
        ("x in [1,2.50,'a',\"it's\", TRUE]", "x IN [1, 2.5, 'a', \"it's\", true]"),
        ("n > 10000000000000000.0", "n > 10000000000000000.0"),
        ("n < .0000001", "n < 0.0000001"),
        ("langs[007] == 'fr'", "langs[7] == 'fr'"),
        ("a not in [ - 1 ]", "a NOT IN [-1]"),
        ("a - -1 contains b.c[0].d", "a - -1 CONTAINS b.c[0].d"),
    ],
)
def test_printing_is_canonical_and_parses_back(text: str, canonical: str) -> None:
    expression = parse(text)
    assert expression.to_text() == str(expression) == canonical
    assert parse(canonical) == expression
    assert expression.text == text


def test_equality_is_on_the_tree_not_the_spelling() -> None:
    assert parse("a==1 and b in [1]") == parse("a == 1  AND  b IN [1]")
    assert hash(parse("a==1")) == hash(parse("a == 1"))
    assert parse("a == 1") != parse("a == 1.0")
    assert parse("a == 1") != parse("a == true")
    assert parse("(a == 1 OR b == 1) AND c == 1") != parse("a == 1 OR b == 1 AND c == 1")
    assert parse("task.a == 1", require_prefixes=True) != parse("task.a == 1")


def test_arrays_compare_element_by_element_with_the_same_rules() -> None:
    assert parse("skills == ['billing', 'es']").matches(ATTRS) is True
    assert parse("flags == [true]").matches({"flags": [1]}) is False
    assert parse("flags == [1]").matches({"flags": [1.0]}) is True


@pytest.mark.parametrize(
    ("text", "message", "position"),
    [
        ("(" * 51 + "a == 1" + ")" * 51, "nesting deeper than 50 at position 50", 50),
        ("a IN " + "[" * 51 + "]" * 51, "nesting deeper than 50 at position 55", 55),
        ("a == " + "9" * 400 + ".0", "is out of range", 5),
        ("a[²] == 1", "unexpected character '²' at position 2", 2),
        ("a == ²", "unexpected character '²' at position 5", 5),
        ("a == 1.2.3", "invalid number '1.2.3' at position 5", 5),
    ],
)
def test_limits_and_odd_characters_are_expression_errors(
    text: str, message: str, position: int
) -> None:
    with pytest.raises(ExpressionError) as raised:
        parse(text)
    assert message in raised.value.message
    assert raised.value.position == position


def test_long_chains_evaluate_without_deep_recursion() -> None:
    expression = parse(" AND ".join(["a == 1"] * 3000) + " OR b - c - d == 0")
    assert expression.matches({"a": 1}) is True
    assert expression.matches({"a": 2, "b": 3, "c": 2, "d": 1}) is True
    assert parse("(" * 50 + "a == 1" + ")" * 50).matches({"a": 1}) is True
