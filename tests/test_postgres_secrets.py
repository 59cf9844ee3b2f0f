"""The database password in QUICKBOT_SEGMENT_DATABASE_URL never shows: not in CLI output, logs,
errors or reprs, also when libpq's own message quotes the connection string, and in any
spelling the URL holds (raw, percent-encoded)."""

from __future__ import annotations

import logging
import traceback
import urllib.parse

import pytest

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.core.counters import Counters
from quickbot_segment_plugin.core.errors import ConfigurationError
from quickbot_segment_plugin.deadletters import DeadLetterStore
from quickbot_segment_plugin.deadletters.database_url import parse_database_url

PASSWORD = "Pw-LEAKCANARY-9f3k"

BROKEN_URLS = [
    f"postgresql://quickbot:{PASSWORD}@127.0.0.1:1/db",  # nothing listening
    f"postgresql://quickbot:{PASSWORD}@127.0.0.1:1/db?sslmode=bogus",  # libpq: invalid sslmode value
    f"postgresql://quickbot:{PASSWORD}@127.0.0.1:1/db?nonsense=1",  # libpq: invalid URI query parameter
    f"postgresql://quickbot:{PASSWORD}%ZZ@127.0.0.1:1/db",  # libpq quotes the bad token, password and all
    f"postgresql://quickbot:{PASSWORD} x@127.0.0.1:1/db",  # libpq quotes the spaced password
    f"postgresql://quickbot:{PASSWORD}@[::1:1/db",  # a malformed host
    f"postgresql://quickbot@127.0.0.1:1/db?password={PASSWORD}",  # the password as a parameter
    f"postgresql://quickbot:{urllib.parse.quote(PASSWORD + '/@:')}@127.0.0.1:1/db",  # percent-encoded
    f"postgres://quickbot:{PASSWORD}@127.0.0.1:1/",  # no database
    f"mysql://quickbot:{PASSWORD}@127.0.0.1:1/db",  # not PostgreSQL
]

COMMANDS = [
    ["stats"],
    ["dead-letters", "list"],
    ["dead-letters", "replay"],
    ["dead-letters", "purge", "--yes"],
    ["privacy", "forget", "--workspace", "ws", "--user-id", "alice"],
]


def leaked(text: str, password: str = PASSWORD) -> bool:
    return password in text or urllib.parse.quote(password) in text or password.lower() in text.lower()


@pytest.mark.parametrize("url", BROKEN_URLS)
def test_a_broken_database_url_is_one_clear_line_without_the_password(
    url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("QUICKBOT_SEGMENT_DATABASE_URL", url)
    for command in COMMANDS:
        status = main(command)
        captured = capsys.readouterr()
        output = captured.out + captured.err

        assert status == 2, (command, output)
        assert "QUICKBOT_SEGMENT_DATABASE_URL" in output or "cannot use" in output, output
        assert "Traceback" not in output
        assert not leaked(output), output
    assert not leaked(caplog.text), caplog.text


@pytest.mark.parametrize("url", BROKEN_URLS[:8])
def test_the_url_on_the_command_line_is_not_echoed_either(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    status = main(["dead-letters", "list", "--db", url])
    captured = capsys.readouterr()

    assert status == 2
    assert not leaked(captured.out + captured.err), captured.err


def test_a_wrong_password_to_a_real_server_is_reported_without_it(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = urllib.parse.urlsplit(postgres_url)
    wrong = postgres_url.replace(f":{parts.password}@", f":{PASSWORD}@")
    monkeypatch.setenv("QUICKBOT_SEGMENT_DATABASE_URL", wrong)

    status = main(["stats"])
    captured = capsys.readouterr()

    assert status == 2
    assert "password authentication failed" in captured.err
    assert "postgresql://quickbot:***@127.0.0.1" in captured.err
    assert not leaked(captured.out + captured.err)


def test_a_working_store_never_shows_its_password(
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    password = urllib.parse.urlsplit(postgres_url).password
    assert password
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("QUICKBOT_SEGMENT_DATABASE_URL", postgres_url)
    store = DeadLetterStore(counters=Counters())
    store.add("ws", [{"type": "track", "userId": "alice", "event": "E", "messageId": "m-1"}], "queue_full")
    assert store.record_counters({("ws", "queued"): 1})

    shown = [repr(store), store.location, repr(store.backend), repr(parse_database_url(postgres_url))]
    for command in (["stats"], ["stats", "--json"], ["dead-letters", "list", "--json"], ["dead-letters", "purge"]):
        main(command)
        captured = capsys.readouterr()
        shown.append(captured.out + captured.err)
    store.forget("ws", user_id="alice")

    assert all("***" in text or "[" in text for text in shown[:4])
    assert not any(leaked(text, password) for text in shown), shown
    assert "migrated the dead-letter database" in caplog.text
    assert not leaked(caplog.text, password)
    store.close()


def test_malformed_urls_name_the_variable_and_say_how_to_fix_it() -> None:
    with pytest.raises(ConfigurationError, match="must start with postgresql://") as error:
        parse_database_url(f"mysql://u:{PASSWORD}@h/db")
    assert not leaked(str(error.value))
    with pytest.raises(ConfigurationError, match="names no database"):
        parse_database_url(f"postgresql://u:{PASSWORD}@h")
    with pytest.raises(ConfigurationError, match="not a valid URL"):
        parse_database_url(f"postgresql://u:{PASSWORD}@h:port/db")


def test_the_display_form_keeps_what_an_operator_needs() -> None:
    url = parse_database_url(
        f"postgresql://app:{PASSWORD}@db.internal:6543/quickbot?sslmode=require&sslpassword=xyz12345"
    )
    assert url.display == "postgresql://app:***@db.internal:6543/quickbot?sslmode=require&sslpassword=***"
    assert str(url) == url.display == repr(url).removeprefix("DatabaseUrl('").removesuffix("')")


@pytest.mark.parametrize("url", BROKEN_URLS[:8])
def test_errors_and_their_tracebacks_hold_no_password(url: str) -> None:
    with pytest.raises(Exception) as raised:  # whichever error: its text is what matters
        DeadLetterStore(url, counters=Counters()).count()

    text = "".join(traceback.format_exception(raised.value))
    assert not leaked(text), text
    assert not leaked(repr(raised.value))
    assert "postgresql://quickbot:***@" in text or "QUICKBOT_SEGMENT_DATABASE_URL" in text or "--db" in text
