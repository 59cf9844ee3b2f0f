"""The write key never leaks: every output of the credentials code, scanned for a canary key.

Each path that can print, log, return or raise is driven with a recognisable write key; then
every captured log record (DEBUG and up), stdout, stderr, result and exception text (with its
`repr`, `args` and the whole `__cause__`/`__context__` chain) is searched for it.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import pickle
import secrets
import socket
import sys
from collections.abc import Callable

import pytest
from pydantic import BaseModel, TypeAdapter
from support import receiver

from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.core import redaction
from quickbot_segment_plugin.core.regions import ENDPOINT_ENV
from quickbot_segment_plugin.credentials.keyring import (
    ENCRYPTION_KEYS_ENV,
    Credentials,
    KeyRing,
    WriteKey,
    generate_key,
)

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


def canary() -> str:
    return "LEAKCANARY" + secrets.token_hex(12)


class Scan:
    """Everything a user or an operator could see, collected for one search."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.raised = 0

    def exception(self, error: BaseException) -> None:
        seen: set[int] = set()
        pending: list[BaseException | None] = [error]
        while pending:
            current = pending.pop()
            if current is None or id(current) in seen:
                continue
            seen.add(id(current))
            self.texts += [str(current), repr(current), repr(current.args), repr(vars(current))]
            pending += [current.__cause__, current.__context__]

    def call(self, action: Callable[[], object]) -> object:
        """Run `action`; keep its result's text, or its exception's."""
        try:
            result = action()
        except Exception as error:
            self.raised += 1
            self.exception(error)
            return None
        self.texts.append(repr(result))
        self.texts.append(str(result))
        return result

    def find(self, needles: list[str]) -> list[str]:
        return [text for text in self.texts for needle in needles if needle in text]


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(ENDPOINT_ENV, "http://127.0.0.1:9")  # never a Segment host, whatever happens


def test_no_output_of_the_credentials_code_contains_the_write_key(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)
    write_key = canary()
    basic = base64.b64encode(f"{write_key}:".encode()).decode()
    key = generate_key()
    ring = KeyRing.from_env({ENCRYPTION_KEYS_ENV: key})
    scan = Scan()

    # Sealing and opening, successful and not. (An unknown key id of up to 32 characters is
    # quoted by design, so the operator knows which key to restore: it is part of the stored
    # token, never secret material, and a full-length key does not fit there.)
    token = ring.seal({"writeKey": write_key, "region": "eu"}, "w")
    opened = ring.open(token, "w")
    assert opened.write_key.reveal() == write_key  # the paths below really carry the key
    scan.texts += [token, repr(opened), str(opened), repr(ring)]
    tampered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]
    other_ring = KeyRing.from_env({ENCRYPTION_KEYS_ENV: generate_key()})
    kid = ring.sealing_key_id
    for action in [
        lambda: ring.open(tampered, "w"),
        lambda: ring.open(token, "another-workspace"),
        lambda: other_ring.open(token, "w"),
        lambda: ring.reseal(token, "another-workspace"),
        lambda: ring.open(write_key, "w"),  # a raw key stored instead of a token
        lambda: ring.open(f"qbseg.v1.{kid}.{write_key}", "w"),
        lambda: ring.open(f"qbseg.v1.{write_key}.{token.split('.')[3]}", "w"),  # a key where the kid goes
        lambda: ring.open(f"qbseg.{write_key}.{kid}.AAAA", "w"),
        lambda: ring.open(f"{write_key}.v1.{kid}.AAAA", "w"),
        lambda: ring.key_id(write_key),
        lambda: ring.reseal(write_key, "w"),
    ]:
        scan.call(action)

    # Bad encryption-key material (the key ring is built from text an operator typed).
    for setting in [write_key, f"{write_key}:{key}", f"k:{write_key}", f"{key},{write_key}", f"{key} {write_key}"]:
        scan.call(lambda setting=setting: KeyRing.from_env({ENCRYPTION_KEYS_ENV: setting}))

    # Validation, with a key this process has never sealed or opened. `write_key` is known to
    # `redaction.known_secrets` since the seal above, so every CredentialsError would have it
    # scrubbed and a message quoting the raw input would pass unseen; a fresh canary is not, and
    # `known_secrets.add` is a no-op here so that nothing below can teach it to the scrubber either.
    raw = canary()

    class Holder(BaseModel):
        key: WriteKey
        credentials: Credentials | None = None

    with monkeypatch.context() as unscrubbed:
        unscrubbed.setattr(redaction.known_secrets, "add", lambda secret: None)
        # Form validation, with the key in the right field but malformed, and in the wrong fields.
        for values in [
            {"writeKey": raw + " tail"},
            {"writeKey": raw + "€"},
            {"writeKey": raw * 10},
            {"writeKey": "\n" + raw + "\t" + raw},
            {"writeKey": [raw]},
            {"writeKey": raw.encode()},
            {"writeKey": "placeholder-key", "region": raw},
            {"writeKey": raw, "region": raw},
            {raw: raw},
            {"writeKey": raw, raw: "x"},
            {"writeKey": raw, "apiKey": raw},
            {"write_key": raw, "writeKey": raw},
            {"region": raw},
            [raw],
            raw,
        ]:
            scan.call(lambda values=values: ring.seal(values, "w"))  # type: ignore[arg-type]

        # pydantic's entry points, which would normally quote the rejected input.
        for action in [
            lambda: Credentials(writeKey=raw + " x"),
            lambda: Credentials(writeKey=raw, region=raw),  # type: ignore[arg-type]
            lambda: Credentials.model_validate({"writeKey": raw, "extra": raw}),
            lambda: Credentials.model_validate_json('{"writeKey": "' + raw),
            lambda: Credentials.model_validate_json(json.dumps({"writeKey": raw, "region": raw})),
            lambda: TypeAdapter(Credentials).validate_json('{"writeKey": "' + raw),
            lambda: TypeAdapter(WriteKey).validate_python(raw + " x"),
            lambda: Holder(key=raw + "\x00"),  # type: ignore[arg-type]
            lambda: Holder.model_validate({"key": raw, "credentials": {"writeKey": raw, "x": 1}}),
            lambda: WriteKey(raw + " "),
            lambda: pickle.dumps(WriteKey(raw)),
            lambda: pickle.dumps(opened),
            lambda: json.dumps(WriteKey(raw)),
        ]:
            scan.call(action)

    # Every way of printing or dumping a key and credentials.
    wrapped = WriteKey(write_key)
    holder = Holder(key=write_key, credentials=opened)  # type: ignore[arg-type]
    scan.texts += [
        repr(wrapped),
        str(wrapped),
        f"{wrapped}",
        f"{wrapped!r:>80}",
        "%s %r" % (wrapped, wrapped),  # noqa: UP031
        repr(opened),
        str(opened),
        repr(opened.model_dump()),
        repr(opened.model_dump(by_alias=True)),
        opened.model_dump_json(),
        opened.model_dump_json(by_alias=True),
        json.dumps(opened.model_dump(mode="json")),
        repr(holder),
        holder.model_dump_json(),
        repr(dict(opened)),
        repr(vars(opened)),
        json.dumps(Credentials.model_json_schema()),
    ]

    # The CLI: seal, rotate and check, succeeding and failing.
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, key)

    def cli(argv: list[str], stdin: str = "") -> int:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        try:
            return main(argv)
        except SystemExit as exited:  # argparse usage errors
            scan.exception(exited)
            return int(exited.code or 0)

    statuses = [
        cli(["credentials", "seal", "--workspace", "w", "--region", "eu"], write_key + "\n"),
        cli(["credentials", "seal", "--workspace", "w"], write_key + " " + write_key),
        cli(["credentials", "seal", "--workspace", "w"], write_key * 20),
        cli(["credentials", "seal", "--workspace", "w", "--region", write_key], write_key),
        cli(["credentials", "rotate", "--workspace", "w"], f"{token}\n"),
        cli(["credentials", "rotate", "--workspace", "w"], f"{token}\n{write_key}\n"),
        cli(["credentials", "rotate"], f"w\t{token}\nw {write_key}\n"),
        cli(["credentials", "check", write_key, "--workspace", "w"]),
        cli(["credentials", "check", token, "--workspace", "other"]),
        cli(["keygen"]),
    ]
    with receiver(200, echo=True) as ok, receiver(500, echo=True) as failing, receiver(401, echo=True) as refusing:
        for server in (ok, failing, refusing):
            monkeypatch.setenv(ENDPOINT_ENV, server.url)
            statuses.append(cli(["credentials", "check", token, "--workspace", "w"]))
    assert all(write_key.encode() in body for body in ok.bodies + failing.bodies + refusing.bodies)
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    monkeypatch.setenv(ENDPOINT_ENV, f"http://127.0.0.1:{closed.getsockname()[1]}")
    closed.close()
    statuses.append(cli(["credentials", "check", token, "--workspace", "w"]))
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(4)
        monkeypatch.setenv(ENDPOINT_ENV, f"http://127.0.0.1:{silent.getsockname()[1]}")
        statuses.append(cli(["credentials", "check", token, "--workspace", "w", "--timeout", "0.2"]))
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV)
    statuses.append(cli(["credentials", "seal", "--workspace", "w"], write_key))
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, write_key)
    statuses.append(cli(["credentials", "check", token, "--workspace", "w"]))

    captured = capsys.readouterr()
    scan.texts += [captured.out, captured.err, caplog.text]
    for record in caplog.records:
        scan.texts += [record.getMessage(), repr(vars(record))]

    # The paths ran and failed where they should, so the scan below has something to search.
    assert statuses == [0, 2, 2, 2, 0, 1, 1, 2, 2, 0, 0, 1, 1, 1, 1, 2, 2]
    assert scan.raised >= 40
    assert "HTTP 500" in captured.err and "HTTP 401" in captured.err and "timeout" in captured.err
    assert opened.write_key.fingerprint in captured.out
    assert any(record.name == "quickbot_segment_plugin.credentials" for record in caplog.records)

    leaks = scan.find([write_key, raw, "LEAKCANARY", basic])
    assert leaks == [], f"{len(leaks)} outputs contain the write key"


def test_the_segment_library_debug_log_never_shows_the_key(caplog: pytest.LogCaptureFixture) -> None:
    """segment-analytics-python logs each request body, writeKey included, at DEBUG."""
    import segment.analytics

    write_key = canary()  # never opened, so only the filter's own patterns can hide it
    redaction.install()
    caplog.set_level(logging.DEBUG, logger="segment")
    with receiver(200, echo=True) as server:
        client = segment.analytics.Client(write_key=write_key, host=server.url, sync_mode=True, max_retries=0)
        client.track(user_id="user-1", event="Signed Up", properties={"plan": "pro"})
        client.identify(user_id="user-1", traits={"email": "someone@example.com"})

    assert len(server.bodies) == 2 and all(write_key.encode() in body for body in server.bodies)
    messages = [record.getMessage() for record in caplog.records if record.name == "segment"]
    assert any(message.startswith("making request:") and "Signed Up" in message for message in messages)
    assert any("received response" in message or "uploaded" in message for message in messages)
    for text in [caplog.text, *messages]:
        assert write_key not in text
        assert "LEAKCANARY" not in text
        assert base64.b64encode(f"{write_key}:".encode()).decode() not in text
