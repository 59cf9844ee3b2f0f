"""`quickbot-segment keygen` and `credentials seal|rotate|check`, run through the real CLI entry point.

`check` talks to real HTTP servers on 127.0.0.1 started here; never to a Segment host.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from support import receiver

from quickbot_segment_plugin.cli import credentials as credentials_cli
from quickbot_segment_plugin.cli import main
from quickbot_segment_plugin.core.regions import ENDPOINT_ENV
from quickbot_segment_plugin.credentials.keyring import ENCRYPTION_KEYS_ENV, KeyRing, generate_key

WRITE_KEY = "cliTestKey7Hq2Zr9Lm4Xv8Wb1Nc5Td3"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture(autouse=True)
def no_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """urllib honours proxy variables; loopback must stay loopback."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv(ENDPOINT_ENV, raising=False)


@pytest.fixture
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    generated = generate_key()
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, generated)
    return generated


def run(monkeypatch: pytest.MonkeyPatch, argv: list[str], stdin: str = "") -> int:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    return main(argv)


@contextmanager
def silent_server() -> Iterator[str]:
    """Accepts TCP connections (the kernel does, from the backlog) and never answers."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        listener.close()


def closed_port_url() -> str:
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return f"http://127.0.0.1:{port}"


def seal(key: str, workspace: str = "w", write_key: str = WRITE_KEY, region: str = "us") -> str:
    return KeyRing.from_env({ENCRYPTION_KEYS_ENV: key}).seal({"writeKey": write_key, "region": region}, workspace)


# --- keygen ----------------------------------------------------------------------------------------


def test_keygen_prints_a_key_the_key_ring_accepts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(monkeypatch, ["keygen"]) == 0
    out, err = capsys.readouterr()
    printed = out.strip()

    assert len(printed.splitlines()) == 1
    ring = KeyRing.from_env({ENCRYPTION_KEYS_ENV: printed})
    assert ring.open(ring.seal({"writeKey": WRITE_KEY}, "w"), "w").write_key.reveal() == WRITE_KEY
    assert "Prepend it to QUICKBOT_ENCRYPTION_KEYS" in err
    assert run(monkeypatch, ["keygen"]) == 0
    assert capsys.readouterr().out.strip() != printed


def test_keygen_can_name_the_key(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(monkeypatch, ["keygen", "--id", "2025-q3"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed.startswith("2025-q3:")
    assert KeyRing.from_env({ENCRYPTION_KEYS_ENV: printed}).key_ids == ("2025-q3",)

    assert run(monkeypatch, ["keygen", "--id", "no spaces"]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid key id" in err


# --- seal ------------------------------------------------------------------------------------------


def test_seal_reads_the_key_from_stdin_and_prints_only_the_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    status = run(monkeypatch, ["credentials", "seal", "--workspace", "ws-9", "--region", "EU"], WRITE_KEY + "\n")

    out, err = capsys.readouterr()
    assert status == 0
    token = out.strip()
    opened = KeyRing.from_env({ENCRYPTION_KEYS_ENV: key}).open(token, "ws-9")
    assert (opened.write_key.reveal(), opened.region) == (WRITE_KEY, "eu")
    assert "ws-9" in err and "region eu" in err
    assert WRITE_KEY not in out + err


def test_seal_prompts_without_echo_on_a_terminal(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:  # a TTY cannot be driven from here; getpass can
        prompts.append(prompt)
        return WRITE_KEY

    monkeypatch.setattr(sys, "stdin", Terminal("this must not be read"))
    monkeypatch.setattr(credentials_cli.getpass, "getpass", fake_getpass)

    assert main(["credentials", "seal", "--workspace", "w"]) == 0

    token = capsys.readouterr().out.strip()
    assert KeyRing.from_env({ENCRYPTION_KEYS_ENV: key}).open(token, "w").write_key.reveal() == WRITE_KEY
    assert prompts == ["Segment write key (input hidden): "]


@pytest.mark.parametrize(
    ("stdin", "expected"),
    [
        ("", "writeKey is required"),
        ("two words here", "writeKey contains whitespace"),
        ("short", "writeKey has 5"),
    ],
)
def test_seal_refuses_a_bad_key_with_exit_status_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str, stdin: str, expected: str
) -> None:
    assert run(monkeypatch, ["credentials", "seal", "--workspace", "w"], stdin) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert expected in err


def test_seal_without_encryption_keys_says_how_to_make_one(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV, raising=False)
    assert run(monkeypatch, ["credentials", "seal", "--workspace", "w"], WRITE_KEY) == 2
    err = capsys.readouterr().err
    assert "QUICKBOT_ENCRYPTION_KEYS is not set" in err
    assert "quickbot-segment keygen" in err


def test_seal_rejects_an_unknown_region_as_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        run(monkeypatch, ["credentials", "seal", "--workspace", "w", "--region", "ap"], WRITE_KEY)
    assert exited.value.code == 2
    assert "invalid choice: 'ap'" in capsys.readouterr().err


# --- rotate ----------------------------------------------------------------------------------------


def test_rotate_reseals_every_token_under_the_new_key_in_order(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    old_key, new_key = generate_key(), generate_key()
    write_keys = [f"{WRITE_KEY}{n}" for n in range(3)]
    old_tokens = [seal(old_key, "w", write_key) for write_key in write_keys]
    tokens_file = tmp_path / "tokens.txt"
    tokens_file.write_text(f"{old_tokens[0]}\n\n{old_tokens[1]}\n{old_tokens[2]}\n", encoding="utf-8")
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, f"{new_key},{old_key}")

    assert run(monkeypatch, ["credentials", "rotate", "--workspace", "w", str(tokens_file)]) == 0

    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[1] == "" and len(lines) == 4
    new_only = KeyRing.from_env({ENCRYPTION_KEYS_ENV: new_key})
    resealed = [lines[0], lines[2], lines[3]]
    assert [new_only.key_id(token) for token in resealed] == [new_only.sealing_key_id] * 3
    assert [new_only.open(token, "w").write_key.reveal() for token in resealed] == write_keys
    assert f"Re-sealed 3 token(s) with key id {new_only.sealing_key_id}" in err


def test_rotate_reads_stdin_and_lines_of_workspace_and_token(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old_key, new_key = generate_key(), generate_key()
    lines_in = f"alpha\t{seal(old_key, 'alpha')}\nbeta\t{seal(old_key, 'beta', region='eu')}\n"
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, f"{new_key},{old_key}")

    assert run(monkeypatch, ["credentials", "rotate"], lines_in) == 0

    new_only = KeyRing.from_env({ENCRYPTION_KEYS_ENV: new_key})
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert [workspace for workspace, _ in rows] == ["alpha", "beta"]
    assert [new_only.open(token, workspace).region for workspace, token in rows] == ["us", "eu"]


def test_rotate_writes_nothing_when_a_token_fails(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    good = seal(key, "w")
    other_workspace = seal(key, "elsewhere")

    status = run(monkeypatch, ["credentials", "rotate", "--workspace", "w"], f"{good}\n{other_workspace}\ngarbage\n")

    out, err = capsys.readouterr()
    assert status == 1
    assert out == ""
    assert "line 2: credentials are corrupted or were sealed with another key" in err
    assert "line 3: credentials are corrupted" in err
    assert "2 of the tokens could not be re-sealed; nothing was written" in err


def test_rotate_of_a_missing_file_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str, tmp_path: Path
) -> None:
    missing = tmp_path / "nope.txt"
    assert run(monkeypatch, ["credentials", "rotate", "--workspace", "w", str(missing)]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- check -----------------------------------------------------------------------------------------


def check(monkeypatch: pytest.MonkeyPatch, endpoint: str, token: str, *extra: str) -> int:
    monkeypatch.setenv(ENDPOINT_ENV, endpoint)
    return run(monkeypatch, ["credentials", "check", token, "--workspace", "w", *extra])


def test_check_posts_an_empty_batch_like_the_library_and_says_what_200_means(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    token = seal(key, region="eu")
    with receiver(200) as server:
        status = check(monkeypatch, server.url, token)

    out, err = capsys.readouterr()
    assert status == 0, err
    [(method, path, headers, body)] = server.requests
    assert (method, path) == ("POST", "/v1/batch")
    assert json.loads(body) == {"batch": [], "writeKey": WRITE_KEY}
    assert headers["Authorization"] == "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode()
    assert headers["Content-Type"] == "application/json"
    assert f"Endpoint:  {server.url}/v1/batch (from QUICKBOT_SEGMENT_ENDPOINT)" in out
    assert "Region:    eu" in out
    assert "Reachable: HTTP 200" in out
    assert "Segment answers 200 to any write key" in out
    assert "Debugger" in out
    assert WRITE_KEY not in out + err


def test_check_reports_an_http_error_status_without_echoing_the_key(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    with receiver(500, echo=True) as server:  # a server that echoes the body, key included
        status = check(monkeypatch, server.url, seal(key))

    out, err = capsys.readouterr()
    assert status == 1
    assert "Check failed: HTTP 500 Internal Server Error: the endpoint is failing" in err
    assert '"batch": []' in err  # the echoed body is shown...
    assert WRITE_KEY not in out + err  # ...without the key
    assert base64.b64encode(f"{WRITE_KEY}:".encode()).decode() not in out + err


def test_check_reports_a_redirect_as_a_wrong_endpoint(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    with receiver(307, headers={"Location": "http://127.0.0.1:9/elsewhere"}) as server:
        status = check(monkeypatch, server.url, seal(key))

    assert status == 1
    assert "endpoint redirects to http://127.0.0.1:9/elsewhere" in capsys.readouterr().err
    assert len(server.requests) == 1


def test_check_reports_connection_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    url = closed_port_url()
    assert check(monkeypatch, url, seal(key)) == 1
    assert f"connection refused by 127.0.0.1:{url.rsplit(':', 1)[1]}" in capsys.readouterr().err


def test_check_reports_a_timeout(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str) -> None:
    with silent_server() as url:
        status = check(monkeypatch, url, seal(key), "--timeout", "0.3")

    assert status == 1
    assert "timeout: 127.0.0.1" in capsys.readouterr().err


def test_check_reports_a_tls_failure(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    with receiver(200) as server:  # plain HTTP spoken to with TLS
        status = check(monkeypatch, server.url.replace("http://", "https://"), seal(key), "--timeout", "5")

    assert status == 1
    assert "TLS handshake with 127.0.0.1" in capsys.readouterr().err


def test_check_names_dns_failures() -> None:
    cause = credentials_cli.describe_network_failure(
        socket.gaierror(socket.EAI_NONAME, "Name or service not known"),
        "https://api.segment.example/v1/batch",
        5,
    )
    assert cause == "DNS lookup failed: api.segment.example does not resolve (Name or service not known)"


def test_check_of_a_token_from_another_workspace_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str
) -> None:
    with receiver(200) as server:
        status = check(monkeypatch, server.url, seal(key, workspace="other"))

    assert status == 2
    assert "another workspace" in capsys.readouterr().err
    assert server.requests == []


@pytest.mark.parametrize("timeout", ["0", "-1", "soon", "601"])
def test_check_refuses_a_bad_timeout(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], key: str, timeout: str
) -> None:
    with pytest.raises(SystemExit) as exited:
        check(monkeypatch, "http://127.0.0.1:9", seal(key), "--timeout", timeout)
    assert exited.value.code == 2
    assert "--timeout" in capsys.readouterr().err
