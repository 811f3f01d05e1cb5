"""``load_settings``: the defaults of API.md, the parsing of each variable, one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import SecretStr

from escalator.errors import ConfigurationError
from escalator.routing import bundled_routing_path, load_routing
from escalator.settings import Settings, load_settings

KEY_A = "key-a-0123456789abcdef"
KEY_B = "key-b-fedcba9876543210"
WORKSPACE_SID = "WS" + "0123456789abcdef" * 2
WORKFLOW_SID = "WW" + "fedcba9876543210" * 2
ACCOUNT_SID = "AC" + "a1" * 16


@pytest.fixture(autouse=True)
def _no_settings_in_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the developer's shell exports, these tests see only what they pass."""
    for name in os.environ:
        if name.startswith(("ESCALATOR_", "TWILIO_")):
            monkeypatch.delenv(name)


def configuration_error(environ: dict[str, str]) -> str:
    with pytest.raises(ConfigurationError) as caught:
        load_settings(environ)
    return str(caught.value)


def test_empty_environment_gives_the_documented_defaults() -> None:
    settings = load_settings({})

    assert settings.database_url == "sqlite:///escalator.db"
    assert settings.routing_file is None
    assert settings.host == "127.0.0.1"
    assert settings.port == 8080
    assert settings.public_url is None
    assert settings.effective_public_url == "http://127.0.0.1:8080"
    assert settings.api_keys == ()
    assert settings.twilio_account_sid is None
    assert settings.twilio_auth_token is None
    assert settings.workspace_sid is None
    assert settings.workflow_sid is None
    assert settings.taskrouter_url == "https://taskrouter.twilio.com"
    # None: decided at startup from whether stderr is a TTY (console) or not (json).
    assert settings.log_format is None
    assert (settings.shutdown_grace, settings.shutdown_delay) == (20, 0)
    assert (settings.idempotency_ttl, settings.lookup_rate_per_second) == (86_400, 3)


def test_a_shutdown_delay_must_leave_time_to_drain() -> None:
    message = configuration_error(
        {"ESCALATOR_SHUTDOWN_GRACE_SECONDS": "5", "ESCALATOR_SHUTDOWN_DELAY_SECONDS": "5"}
    )

    assert message == (
        "ESCALATOR_SHUTDOWN_DELAY_SECONDS: must be shorter than ESCALATOR_SHUTDOWN_GRACE_SECONDS"
    )


def test_default_routing_file_is_the_bundled_example() -> None:
    settings = load_settings({})

    assert load_routing(settings.routing_file).file == load_routing(bundled_routing_path()).file


def test_public_url_defaults_to_the_configured_host_and_port() -> None:
    settings = load_settings({"ESCALATOR_HOST": "0.0.0.0", "ESCALATOR_PORT": "9000"})

    assert settings.effective_public_url == "http://0.0.0.0:9000"


def test_explicit_public_url_wins_without_its_trailing_slash() -> None:
    settings = load_settings({"ESCALATOR_PUBLIC_URL": "https://escalator.example.com/"})

    assert settings.effective_public_url == "https://escalator.example.com"


def test_each_variable_is_read_from_its_documented_name(tmp_path: Path) -> None:
    routing = tmp_path / "routing.yaml"
    settings = load_settings(
        {
            "ESCALATOR_DATABASE_URL": "postgresql://escalator@db:5432/escalator",
            "ESCALATOR_ROUTING_FILE": str(routing),
            "ESCALATOR_HOST": "0.0.0.0",
            "ESCALATOR_PORT": "9090",
            "ESCALATOR_WORKSPACE_SID": WORKSPACE_SID,
            "ESCALATOR_WORKFLOW_SID": WORKFLOW_SID,
            "ESCALATOR_TASKROUTER_URL": "http://127.0.0.1:8090",
            "ESCALATOR_LOG_FORMAT": "json",
        }
    )

    assert settings.database_url == "postgresql://escalator@db:5432/escalator"
    assert settings.routing_file == routing
    assert (settings.host, settings.port) == ("0.0.0.0", 9090)
    assert (settings.workspace_sid, settings.workflow_sid) == (WORKSPACE_SID, WORKFLOW_SID)
    assert settings.taskrouter_url == "http://127.0.0.1:8090"
    assert settings.log_format == "json"


@pytest.mark.parametrize(
    "url", ["sqlite:///escalator.db", "sqlite:////var/lib/escalator/escalator.db"]
)
def test_sqlite_urls_are_accepted(url: str) -> None:
    assert load_settings({"ESCALATOR_DATABASE_URL": url}).database_url == url


def test_api_keys_are_split_on_commas_into_secrets() -> None:
    settings = load_settings({"ESCALATOR_API_KEYS": f" {KEY_A} ,{KEY_B},"})

    assert all(isinstance(key, SecretStr) for key in settings.api_keys)
    assert [key.get_secret_value() for key in settings.api_keys] == [KEY_A, KEY_B]


def test_api_keys_and_auth_token_never_show_in_repr_or_dumps() -> None:
    settings = load_settings(
        {
            "ESCALATOR_API_KEYS": f"{KEY_A},{KEY_B}",
            "TWILIO_ACCOUNT_SID": ACCOUNT_SID,
            "TWILIO_AUTH_TOKEN": "twilio-auth-token-value",
        }
    )

    for shown in (
        repr(settings),
        str(settings),
        settings.model_dump_json(),
        repr(settings.api_keys),
    ):
        assert KEY_A not in shown
        assert KEY_B not in shown
        assert "twilio-auth-token-value" not in shown


def test_twilio_credentials_are_read_without_the_escalator_prefix() -> None:
    settings = load_settings(
        {"TWILIO_ACCOUNT_SID": ACCOUNT_SID, "TWILIO_AUTH_TOKEN": "twilio-auth-token-value"}
    )

    assert settings.twilio_account_sid == ACCOUNT_SID
    assert settings.twilio_auth_token is not None
    assert settings.twilio_auth_token.get_secret_value() == "twilio-auth-token-value"


def test_other_variables_are_ignored() -> None:
    settings = load_settings({"HOME": "/root", "ESCALATOR_NOT_A_SETTING": "x", "PORT": "1"})

    assert settings == load_settings({})


def test_the_given_environ_is_the_only_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESCALATOR_PORT", "9999")
    monkeypatch.setenv("ESCALATOR_API_KEYS", KEY_A)
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)

    settings = load_settings({})

    assert settings.port == 8080
    assert settings.api_keys == ()
    assert settings.twilio_account_sid is None


def test_without_environ_the_process_environment_is_read(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ESCALATOR_PORT", "9999")
    monkeypatch.setenv("TWILIO_ACCOUNT_SID", ACCOUNT_SID)

    settings = load_settings()

    assert (settings.port, settings.twilio_account_sid) == (9999, ACCOUNT_SID)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        pytest.param("ESCALATOR_PORT", "abc", id="port-not-a-number"),
        pytest.param("ESCALATOR_PORT", "70000", id="port-over-65535"),
        pytest.param("ESCALATOR_PORT", "-1", id="port-negative"),
        pytest.param("ESCALATOR_DATABASE_URL", "mysql://escalator@db/escalator", id="mysql"),
        pytest.param("ESCALATOR_DATABASE_URL", "sqlite://", id="sqlite-without-path"),
        pytest.param("ESCALATOR_API_KEYS", "abcde", id="api-key-5-chars"),
        pytest.param("ESCALATOR_API_KEYS", f"{KEY_A},short-key-15chr", id="one-api-key-short"),
        pytest.param("ESCALATOR_WORKSPACE_SID", "WS1234", id="workspace-sid-short"),
        pytest.param("ESCALATOR_WORKSPACE_SID", "WW" + "0" * 32, id="workspace-sid-prefix"),
        pytest.param("ESCALATOR_WORKSPACE_SID", "WS" + "g" * 32, id="workspace-sid-not-hex"),
        pytest.param("ESCALATOR_WORKFLOW_SID", WORKSPACE_SID, id="workflow-sid-is-a-workspace"),
        pytest.param("ESCALATOR_TASKROUTER_URL", "taskrouter.twilio.com", id="url-no-scheme"),
        pytest.param("ESCALATOR_LOG_FORMAT", "xml", id="log-format"),
        pytest.param("ESCALATOR_SHUTDOWN_GRACE_SECONDS", "0", id="no-grace"),
        pytest.param("ESCALATOR_SHUTDOWN_DELAY_SECONDS", "-1", id="negative-delay"),
        pytest.param("ESCALATOR_IDEMPOTENCY_TTL_SECONDS", "0", id="keys-never-live"),
        pytest.param("ESCALATOR_LOOKUP_RATE_PER_SECOND", "4", id="lookups-over-twilios-limit"),
    ],
)
def test_bad_value_raises_one_line_naming_the_variable(variable: str, value: str) -> None:
    message = configuration_error({variable: value})

    assert message.startswith(f"{variable}: ")
    assert len(message) > len(f"{variable}: ")
    assert "\n" not in message


@pytest.mark.parametrize("key", ["abcde", "fifteen-chars-k"])
def test_a_rejected_api_key_is_not_echoed(key: str) -> None:
    message = configuration_error({"ESCALATOR_API_KEYS": key})

    assert key not in message


def test_settings_are_frozen() -> None:
    settings: Settings = load_settings({})

    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]
