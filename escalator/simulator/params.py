"""Reading Twilio's PascalCase form fields and query parameters, with Twilio's 400s."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from multidict import MultiMapping

from escalator.expressions import Expression, ExpressionError, parse
from escalator.simulator.errors import bad_parameter

__all__ = ["Params", "parse_expression"]

_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


class Params:
    """Typed access to form fields or query parameters; every failure is a 400 naming the field."""

    def __init__(
        self, values: MultiMapping[str] | Mapping[str, str], *, where: str = "the post body"
    ) -> None:
        self._values = values
        self._where = where

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def text(self, name: str) -> str | None:
        """The raw value, or None when absent."""
        return self._values.get(name)

    def values(self, name: str) -> list[str] | None:
        """Every value of a repeatable parameter, commas also separating values; None if absent."""
        if isinstance(self._values, MultiMapping):
            raw = self._values.getall(name, [])
        else:
            raw = [self._values[name]] if name in self._values else []
        if not raw:
            return None
        return [part.strip() for value in raw for part in value.split(",") if part.strip()]

    def required(self, name: str) -> str:
        """The value; a 400 when absent or empty."""
        value = self._values.get(name)
        if not value:
            raise bad_parameter(f"Missing required parameter {name} in {self._where}")
        return value

    def integer(self, name: str, *, minimum: int, maximum: int) -> int | None:
        """An integer within [minimum, maximum], or None when absent."""
        value = self._values.get(name)
        if value is None:
            return None
        try:
            number = int(value)
        except ValueError:
            raise bad_parameter(f"Invalid {name}: '{value}' is not an integer") from None
        if not minimum <= number <= maximum:
            raise bad_parameter(f"Invalid {name}: must be between {minimum} and {maximum}")
        return number

    def boolean(self, name: str) -> bool | None:
        """A boolean (`true`/`false`, `1`/`0`, `yes`/`no`), or None when absent."""
        value = self._values.get(name)
        if value is None:
            return None
        if value.lower() in _TRUE:
            return True
        if value.lower() in _FALSE:
            return False
        raise bad_parameter(f"Invalid {name}: '{value}' is not a boolean")

    def choice(self, name: str, choices: tuple[str, ...]) -> str | None:
        """One of `choices`, or None when absent."""
        value = self._values.get(name)
        if value is not None and value not in choices:
            raise bad_parameter(f"Invalid {name}: must be one of {', '.join(choices)}")
        return value

    def json_object(self, name: str, *, max_length: int | None = None) -> dict[str, Any] | None:
        """A JSON object given as a string, or None when absent."""
        value = self._values.get(name)
        if value is None:
            return None
        if max_length is not None and len(value) > max_length:
            raise bad_parameter(
                f"Invalid {name}: {len(value)} characters exceed the limit of {max_length}"
            )
        try:
            parsed = json.loads(value)
        except ValueError as error:
            raise bad_parameter(f"Invalid {name}: not valid JSON ({error})") from None
        if not isinstance(parsed, dict):
            raise bad_parameter(f"Invalid {name}: must be a JSON object")
        return parsed

    def expression(self, name: str, *, require_prefixes: bool = False) -> Expression | None:
        """A TaskRouter expression, or None when absent; a syntax error names its position."""
        value = self._values.get(name)
        if value is None:
            return None
        return parse_expression(name, value, require_prefixes=require_prefixes)


def parse_expression(where: str, text: str, *, require_prefixes: bool = False) -> Expression:
    """Parse `text`; a syntax error becomes a 400 naming `where` and the position."""
    try:
        return parse(text, require_prefixes=require_prefixes)
    except ExpressionError as error:
        raise bad_parameter(f"Invalid {where} '{text}': {error.message}") from None
