"""The HTTP API's settings: keys read as operators write them, and a bad one refused without
showing it."""

from __future__ import annotations

import pytest

from gateway.config.settings import Settings, SettingsError

BASE = {"JWT_SECRET_KEY": "s" * 64}
A, B = "a" * 32, "b" * 48


def test_unset_or_empty_keys_leave_the_api_off() -> None:
    assert Settings.from_environ(BASE).api_keys == ()
    assert Settings.from_environ({**BASE, "WEBSOCKET_API_KEYS": " "}).api_keys == ()


def test_keys_are_split_on_commas_trimmed_and_kept_once() -> None:
    settings = Settings.from_environ({**BASE, "WEBSOCKET_API_KEYS": f" {A} , {B},{A}"})
    assert settings.api_keys == (A, B)


@pytest.mark.parametrize(
    ("keys", "problem"),
    [
        ("short", "key 1 of 1 is 5 characters; each key needs at least 32"),
        (f"{A},", "key 2 of 2 is 0 characters"),
        (f"{A},{'c' * 31}", "key 2 of 2 is 31 characters"),
        (f"{A},{'é' * 40}", "key 2 of 2 has a character other than printable ASCII"),
        (f"{'d' * 20} {'d' * 20}", "key 1 of 1 has a character other than printable ASCII"),
    ],
)
def test_a_bad_key_names_the_variable_and_its_place_but_not_its_text(keys: str, problem: str) -> None:
    with pytest.raises(SettingsError) as error:
        Settings.from_environ({**BASE, "WEBSOCKET_API_KEYS": keys})
    message = str(error.value)
    assert message.startswith("WEBSOCKET_API_KEYS: ") and problem in message
    assert all(key not in message for key in keys.split(",") if key)


def test_the_api_history_and_body_limit_are_read() -> None:
    settings = Settings.from_environ(
        {
            **BASE,
            "WEBSOCKET_API_HISTORY_LENGTH": "7",
            "WEBSOCKET_API_HISTORY_TTL": "2.5",
            "WEBSOCKET_API_MAX_BODY_SIZE": "131072",
        }
    )
    assert (settings.api_history_length, settings.api_history_ttl, settings.api_max_body_size) == (
        7,
        2.5,
        131072,
    )
