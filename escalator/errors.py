"""The one exception root of escalator and its family; each docstring is the default message."""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DuplicateEscalation",
    "EscalationNotFound",
    "EscalatorError",
    "PermanentTwilioError",
    "RoutingFileError",
    "StoreUnavailable",
    "TransientTwilioError",
    "TwilioError",
]


class EscalatorError(Exception):
    """Escalator failed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(EscalatorError):
    """A setting is invalid."""


class RoutingFileError(ConfigurationError):
    """The routing file is invalid."""


class StoreUnavailable(EscalatorError):
    """The database cannot be reached right now; retry later."""


class DuplicateEscalation(EscalatorError):
    """This conversation already has an open escalation."""


class EscalationNotFound(EscalatorError):
    """No escalation has this id."""


class TwilioError(EscalatorError):
    """TaskRouter refused or failed a request."""

    def __init__(
        self, message: str | None = None, *, status: int | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class TransientTwilioError(TwilioError):
    """TaskRouter failed in a way that retrying can fix (5xx, 429, network)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        status: int | None = None,
        code: int | None = None,
        retry_after: float | None = None,
        may_have_succeeded: bool = False,
    ) -> None:
        super().__init__(message, status=status, code=code)
        self.retry_after = retry_after
        self.may_have_succeeded = may_have_succeeded


class PermanentTwilioError(TwilioError):
    """TaskRouter refused the request; retrying the same request cannot succeed."""
