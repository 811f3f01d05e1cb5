"""Markdown pieces of the results file: numbers and tables."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["number", "table"]


def number(value: Any, digits: int = 1, unit: str = "") -> str:
    """`value` with `digits` decimals and thousands separators, or "n/a"."""
    if value is None:
        return "n/a"
    if isinstance(value, int | float):
        return f"{value:,.{digits}f}{unit}"
    return str(value)


def table(header: Iterable[str], rows: Iterable[Iterable[Any]]) -> list[str]:
    """A Markdown table's lines, and a blank line after it."""
    header = list(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return [*lines, ""]
