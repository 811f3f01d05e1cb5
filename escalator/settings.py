"""Every knob of escalator, from the environment (``ESCALATOR_*``, ``TWILIO_*``), read once."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    AliasChoices,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from escalator.errors import ConfigurationError

__all__ = ["Settings", "load_settings"]

_SQLITE = re.compile(r"^sqlite(\+aiosqlite)?:///.+")
_POSTGRES = re.compile(r"^postgres(ql)?(\+asyncpg)?://")


class Settings(BaseSettings):
    """Escalator's configuration; see API.md for the meaning of each variable."""

    model_config = SettingsConfigDict(
        env_prefix="ESCALATOR_", extra="ignore", frozen=True, populate_by_name=True
    )

    database_url: str = "sqlite:///escalator.db"
    routing_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    public_url: str | None = None
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = ()
    twilio_account_sid: str | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_ACCOUNT_SID", "twilio_account_sid")
    )
    twilio_auth_token: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("TWILIO_AUTH_TOKEN", "twilio_auth_token")
    )
    workspace_sid: str | None = Field(default=None, pattern=r"^WS[0-9a-fA-F]{32}$")
    workflow_sid: str | None = Field(default=None, pattern=r"^WW[0-9a-fA-F]{32}$")
    taskrouter_url: str = "https://taskrouter.twilio.com"
    log_format: Literal["console", "json"] | None = None
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    sqlite_synchronous: Literal["FULL", "EXTRA", "NORMAL"] = "FULL"
    # Escalations kept decoded for the next event of their task (a few KiB each; 0: none).
    recent_escalations: int = Field(default=2048, ge=0, le=1_000_000)
    migrate_on_start: bool = True
    max_body_bytes: int = Field(default=65_536, ge=1_024, le=10_485_760)
    dispatch_interval: float = Field(default=0.5, gt=0, le=60)
    dispatch_batch: int = Field(default=20, ge=1, le=500)
    dispatch_lease_seconds: float = Field(default=30.0, gt=0, le=3600)
    twilio_timeout: float = Field(default=10.0, gt=0, le=120)
    retry_max_backoff: float = Field(default=60.0, gt=0, le=3600)
    callback_secret: SecretStr | None = None
    callback_allow_http: bool = False
    callback_allow_private: bool = False
    callback_timeout: float = Field(default=5.0, gt=0, le=60)
    callback_max_attempts: int = Field(default=12, ge=1, le=100)
    stream_poll_seconds: float = Field(default=2.0, gt=0, le=60)
    stream_heartbeat_seconds: float = Field(default=15.0, gt=0, le=300)
    max_streams: int = Field(default=200, ge=1, le=100_000)
    reconcile_after: float = Field(default=60.0, gt=0, le=86_400)
    reconcile_interval: float = Field(default=15.0, gt=0, le=3600)
    reconcile_batch: int = Field(default=50, ge=1, le=1000)
    reconcile_concurrency: int = Field(default=4, ge=1, le=50)
    reconcile_reset_window: float = Field(default=120.0, ge=0, le=86_400)
    # EvaluateTaskAttributes lookups per second, for this process. Twilio allows 3 per second
    # per workspace, shared by every replica: with N replicas, set 3/N (e.g. 1 for 3 replicas).
    # A replica that still exceeds it gets a 429 and backs off; nothing is lost, only delayed.
    lookup_rate_per_second: float = Field(default=3.0, gt=0, le=3)
    idempotency_ttl: float = Field(
        default=86_400.0,
        gt=0,
        le=31_536_000,
        validation_alias=AliasChoices("ESCALATOR_IDEMPOTENCY_TTL_SECONDS", "idempotency_ttl"),
    )
    shutdown_grace: float = Field(
        default=20.0,
        gt=0,
        le=3600,
        validation_alias=AliasChoices("ESCALATOR_SHUTDOWN_GRACE_SECONDS", "shutdown_grace"),
    )
    shutdown_delay: float = Field(
        default=0.0,
        ge=0,
        le=3600,
        validation_alias=AliasChoices("ESCALATOR_SHUTDOWN_DELAY_SECONDS", "shutdown_delay"),
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only what ``load_settings`` passes: it reads the environment it is given, once."""
        return (init_settings,)

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(key.strip() for key in value.split(",") if key.strip())
        return value

    @field_validator("api_keys")
    @classmethod
    def _keys_long_enough(cls, value: tuple[SecretStr, ...]) -> tuple[SecretStr, ...]:
        if any(len(key.get_secret_value()) < 16 for key in value):
            raise ValueError("each API key must be at least 16 characters long")
        return value

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not (_SQLITE.match(value) or _POSTGRES.match(value)):
            raise ValueError("expected sqlite:///PATH or postgresql://user@host:port/db")
        return value

    @field_validator("public_url", "taskrouter_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/") if value else value

    @model_validator(mode="after")
    def _lease_outlives_calls(self) -> Settings:
        # A lease must outlast a find and a create, or a second replica could take the row
        # while the first one's request is still in flight.
        if self.dispatch_lease_seconds < 2 * self.twilio_timeout + 5:
            raise ValueError(
                "dispatch_lease_seconds: must be at least 2 x ESCALATOR_TWILIO_TIMEOUT + 5 s"
            )
        return self

    @model_validator(mode="after")
    def _delay_within_grace(self) -> Settings:
        # The grace period bounds the whole shutdown, the delay before the listener closes too.
        if self.shutdown_delay >= self.shutdown_grace:
            raise ValueError(
                "shutdown_delay: must be shorter than ESCALATOR_SHUTDOWN_GRACE_SECONDS"
            )
        return self

    @property
    def effective_public_url(self) -> str:
        """The URL Twilio calls us at: ``ESCALATOR_PUBLIC_URL`` or ``http://HOST:PORT``."""
        return self.public_url or f"http://{self.host}:{self.port}"


def _variable_name(field: str) -> str:
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info else None
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"ESCALATOR_{field.upper()}"


def _from_environ(environ: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        variable = (
            str(alias.choices[0])
            if isinstance(alias, AliasChoices)
            else f"ESCALATOR_{name.upper()}"
        )
        if variable in environ:
            values[name] = environ[variable]
    return values


def load_settings(environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
    """Read settings from ``environ`` (default: the process environment); one readable error."""
    values = _from_environ(os.environ if environ is None else environ)
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        field = str(first["loc"][0]) if first["loc"] else None
        if field is None:
            # A check across settings names its field first: "field: problem".
            field, _, message = message.partition(": ")
        raise ConfigurationError(f"{_variable_name(field)}: {message}") from None
