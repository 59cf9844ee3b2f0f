"""`quickbot-segment keygen` and `quickbot-segment credentials seal|rotate|check`.

The operator's tools around `credentials.KeyRing`: make an encryption key, seal a write key
without it touching the shell history or the screen, re-seal stored tokens after prepending a
new key, and check that a token opens and its endpoint answers. Exit status: 0 ok, 1 the check
(or a token to rotate) failed, 2 a usage or configuration error. Nothing here prints a write key.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import http.client
import json
import socket
import ssl
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import IO, Any

from .. import __version__
from ..core import ENDPOINT_ENV, EndpointSettings, endpoint_for, redact, server_text
from ..credentials import ENCRYPTION_KEYS_ENV, CredentialsError, CredentialsSettings, KeyRing, WriteKey, generate_key

DEFAULT_CHECK_TIMEOUT = 10.0
# Segment's own answer; repeated wherever a check succeeds so nobody mistakes 200 for "key valid".
SEGMENT_ACCEPTS_ANY_KEY = (
    "Segment answers 200 to any write key, valid or not, so this proves only that the endpoint is "
    "reachable and the key is well-formed. Only an event arriving in the source's Debugger "
    "(Segment: Connections > Sources > your source > Debugger) proves the key."
)
MAX_STDIN_CHARS = 64 * 1024


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    keygen = subparsers.add_parser(
        "keygen",
        help=f"print a new encryption key for {ENCRYPTION_KEYS_ENV}",
        description=(
            f"Print a new AES-256 key (32 random bytes, url-safe base64) for {ENCRYPTION_KEYS_ENV}. "
            "To rotate, prepend it to the variable (NEW,OLD), restart, then run `credentials rotate`."
        ),
    )
    keygen.add_argument(
        "--id",
        dest="key_id",
        metavar="KID",
        help="print the key as KID:KEY, naming it yourself (1-32 of A-Z a-z 0-9 _ -); "
        "by default its id is derived from the key",
    )
    keygen.set_defaults(func=_keygen)

    group = subparsers.add_parser(
        "credentials",
        help="seal, rotate and check Segment credentials tokens",
        description=f"Seal, re-seal and check credentials tokens with the keys in {ENCRYPTION_KEYS_ENV}.",
    )
    actions = group.add_subparsers(dest="credentials_action", metavar="ACTION", required=True)

    seal = actions.add_parser(
        "seal",
        help="seal a write key (read without echo, or from stdin) and print the token",
        description=(
            "Seal a Segment write key for one workspace and print the token the host stores. The key "
            "is prompted for without echo on a terminal, else read from stdin; it is never an argument, "
            "so it stays out of shell history and process lists."
        ),
    )
    seal.add_argument("--workspace", required=True, metavar="WORKSPACE_ID", help="the workspace the token is for")
    seal.add_argument("--region", type=str.lower, choices=("us", "eu"), default="us", help="default: us")
    seal.set_defaults(func=_seal)

    rotate = actions.add_parser(
        "rotate",
        help="re-seal tokens (one per line) under the first key",
        description=(
            f"Read tokens, one per line, from FILE or stdin; open each with any key in {ENCRYPTION_KEYS_ENV} "
            "and print it re-sealed with the first key, in the same order (blank lines kept). Without "
            "--workspace each line is WORKSPACE_ID<TAB>TOKEN and is printed in that form. If any line "
            "fails, nothing is printed to stdout and the exit status is 1."
        ),
    )
    rotate.add_argument("--workspace", metavar="WORKSPACE_ID", help="the workspace of every token")
    rotate.add_argument("file", nargs="?", metavar="FILE", help="default: stdin")
    rotate.set_defaults(func=_rotate)

    check = actions.add_parser(
        "check",
        help="open a token and post an empty batch to its endpoint",
        description=(
            "Open TOKEN, then POST an empty batch to the region's /v1/batch (or "
            f"{ENDPOINT_ENV}) and report whether it answered. {SEGMENT_ACCEPTS_ANY_KEY}"
        ),
    )
    check.add_argument("token", metavar="TOKEN")
    check.add_argument("--workspace", required=True, metavar="WORKSPACE_ID")
    check.add_argument(
        "--timeout",
        type=_positive_seconds,
        default=DEFAULT_CHECK_TIMEOUT,
        metavar="SECONDS",
        help=f"default: {DEFAULT_CHECK_TIMEOUT:g}",
    )
    check.set_defaults(func=_check)


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, got {text!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 600 seconds, got {text!r}")
    return value


def _keygen(args: argparse.Namespace) -> int:
    key = generate_key()
    if args.key_id is not None:
        key = f"{args.key_id}:{key}"
        KeyRing.from_env({ENCRYPTION_KEYS_ENV: key})  # refuses an invalid id before printing it
    print(key)
    if CredentialsSettings.from_env().encryption_keys.get_secret_value():
        advice = (
            f"To rotate: prepend it to {ENCRYPTION_KEYS_ENV} (NEW,OLD...), restart QuickBot, then re-seal "
            "stored tokens with `quickbot-segment credentials rotate`."
        )
    else:
        advice = (
            f"Set {ENCRYPTION_KEYS_ENV} to it in QuickBot's environment (the same value on every replica), "
            "then restart QuickBot; write keys entered in the editor are sealed with it."
        )
    print(f"{advice} Keep it out of the database and version control.", file=sys.stderr)
    return 0


def _read_write_key() -> str:
    """The key from a no-echo prompt on a terminal, else the whole of stdin (a pipe or a file)."""
    if sys.stdin is not None and sys.stdin.isatty():
        try:
            return getpass.getpass("Segment write key (input hidden): ")
        except EOFError:
            return ""
    return sys.stdin.read(MAX_STDIN_CHARS) if sys.stdin is not None else ""


def _seal(args: argparse.Namespace) -> int:
    keyring = KeyRing.from_env()  # a configuration error stops before the key is asked for
    token = keyring.seal({"writeKey": _read_write_key(), "region": args.region}, args.workspace)
    print(token)
    print(
        f"Sealed for workspace {args.workspace!r}, region {args.region}, key id {keyring.sealing_key_id}.",
        file=sys.stderr,
    )
    return 0


def _rotate(args: argparse.Namespace) -> int:
    keyring = KeyRing.from_env()
    try:
        lines = _read_lines(args.file)
    except OSError as error:
        print(f"quickbot-segment: error: cannot read {args.file}: {error.strerror or error}", file=sys.stderr)
        return 2
    output: list[str] = []
    failures: list[str] = []
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text:
            output.append("")
            continue
        if args.workspace is not None:
            if "\t" in text:
                failures.append(
                    f"line {number}: this is a WORKSPACE_ID<TAB>TOKEN line; with --workspace each line is "
                    "a token alone (drop --workspace to re-seal a WORKSPACE_ID<TAB>TOKEN file)"
                )
                continue
            workspace, token = args.workspace, text
        else:
            workspace, separator, token = text.partition("\t")
            if not separator:
                spaced = len(text.split()) == 2 or "," in text
                failures.append(
                    f"line {number}: expected WORKSPACE_ID<TAB>TOKEN"
                    + (" (separate the two with a TAB, not spaces or a comma)" if spaced else "")
                    + ", or one token per line with --workspace WORKSPACE_ID"
                )
                continue
            workspace, token = workspace.strip(), token.strip()
        try:
            resealed = keyring.reseal(token, workspace)
        except CredentialsError as error:
            expected = "a token alone (--workspace)" if args.workspace is not None else "WORKSPACE_ID<TAB>TOKEN"
            failures.append(f"line {number}: {error} (each line must be {expected})")
            continue
        output.append(resealed if args.workspace is not None else f"{workspace}\t{resealed}")
    if failures:
        for failure in failures:
            print(f"quickbot-segment: {failure}", file=sys.stderr)
        print(
            f"quickbot-segment: {len(failures)} of the tokens could not be re-sealed; nothing was written. "
            "Fix or remove those lines and run again.",
            file=sys.stderr,
        )
        return 1
    if output:
        sys.stdout.write("\n".join(output) + "\n")
    resealed_count = sum(1 for line in output if line)
    print(f"Re-sealed {resealed_count} token(s) with key id {keyring.sealing_key_id}.", file=sys.stderr)
    return 0


def _read_lines(path: str | None) -> list[str]:
    if path is None or path == "-":
        return sys.stdin.read().splitlines()
    with open(path, encoding="utf-8") as handle:
        return handle.read().splitlines()


def _check(args: argparse.Namespace) -> int:
    keyring = KeyRing.from_env()
    credentials = keyring.open(args.token, args.workspace)
    url = endpoint_for(credentials.region) + "/v1/batch"
    source = f" (from {ENDPOINT_ENV})" if EndpointSettings.from_env().endpoint else ""
    print(f"Workspace: {args.workspace}")
    print(f"Write key: {credentials.write_key.fingerprint} (fingerprint; the key is never shown)")
    print(f"Region:    {credentials.region}")
    print(f"Endpoint:  {url}{source}")
    result = probe_batch_endpoint(url, credentials.write_key, args.timeout)
    if result.ok:
        print(f"Reachable: HTTP {result.status} in {result.elapsed_ms:.0f} ms.")
        print(f"Note: {SEGMENT_ACCEPTS_ANY_KEY}")
        return 0
    print(f"Check failed: {result.cause}", file=sys.stderr)
    return 1


@dataclass(frozen=True)
class ProbeResult:
    """What posting an empty batch showed: ok (2xx), else the cause in words."""

    ok: bool
    status: int | None
    elapsed_ms: float
    cause: str = ""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """Segment never redirects /v1/batch; following one would hide a wrong endpoint (and drop the body)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def probe_batch_endpoint(url: str, write_key: WriteKey, timeout: float) -> ProbeResult:
    """POST `{"batch": [], "writeKey": ...}` with Basic auth, as segment-analytics-python does.

    An empty batch delivers nothing, so the check is safe against a production source.
    """
    secret = write_key.reveal()
    basic = base64.b64encode(f"{secret}:".encode()).decode("ascii")
    request = urllib.request.Request(
        url,
        data=json.dumps({"batch": [], "writeKey": secret}).encode("utf-8"),
        method="POST",
        headers={
            "Content-Type": "application/json",
            "Authorization": f"Basic {basic}",
            "User-Agent": f"quickbot-segment/{__version__} (credentials check)",
        },
    )
    opener = urllib.request.build_opener(_NoRedirects())
    started = time.monotonic()
    status: int | None = None
    cause = ""
    try:
        with opener.open(request, timeout=timeout) as response:
            status = response.status
            response.read(64 * 1024)
    except urllib.error.HTTPError as error:
        status = error.code
        cause = describe_http_status(
            error.code,
            server_text(str(error.reason or ""), secret),
            _scrubbed_body(error, secret),
            _scrubbed_location(error.headers, secret),
        )
    except urllib.error.URLError as error:
        cause = describe_network_failure(error.reason, url, timeout)
    except (OSError, http.client.HTTPException, ValueError) as error:
        cause = describe_network_failure(error, url, timeout)
    elapsed_ms = (time.monotonic() - started) * 1000
    if not cause and status is not None and not 200 <= status < 300:
        cause = describe_http_status(status, "", "", None)
    return ProbeResult(ok=not cause, status=status, elapsed_ms=elapsed_ms, cause=cause)


def _scrubbed_body(response: IO[bytes], secret: str) -> str:
    """The start of an error body, one printable line, with the key removed in any encoding."""
    try:
        raw = response.read(4096)
    except (OSError, http.client.HTTPException):
        return ""
    return redact(server_text(raw.decode("utf-8", "replace"), secret))


def _scrubbed_location(headers: Any, secret: str) -> str | None:
    """A redirect's target, as safe to print as the body: a `?writeKey=` echo is common."""
    location = headers.get("Location") if headers is not None else None
    return redact(server_text(str(location), secret, limit=300)) if location else None


def describe_http_status(status: int, reason: str, body: str, location: str | None) -> str:
    """An HTTP answer other than 2xx, in the operator's terms; `reason`, `body` and `location`
    are the server's words already made safe to print (`server_text`)."""
    said = f'; the server said: "{body}"' if body else ""
    label = f"HTTP {status}{' ' + reason if reason else ''}"
    if 300 <= status < 400:
        to = f" to {location}" if location else ""
        return (
            f"{label}: the endpoint redirects{to}; Segment's /v1/batch never does, so the URL is "
            f"probably wrong (check {ENDPOINT_ENV}){said}"
        )
    if status in (401, 403):
        return f"{label}: the endpoint refused the write key{said}"
    if status == 404:
        return f"{label}: there is no /v1/batch at this endpoint (check {ENDPOINT_ENV}){said}"
    if status == 429:
        return f"{label}: rate limited; try again later{said}"
    if 500 <= status < 600:
        return f"{label}: the endpoint is failing; try again later{said}"
    return f"{label}: the endpoint rejected an empty batch{said}"


def describe_network_failure(reason: object, url: str, timeout: float) -> str:
    """A failure before any HTTP answer, named by cause: DNS, TLS, refused, timeout..."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or url
    port = parts.port or (443 if parts.scheme == "https" else 80)
    if isinstance(reason, socket.gaierror):
        return f"DNS lookup failed: {host} does not resolve ({reason.strerror or reason})"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate verification failed for {host}: {reason.verify_message or reason.reason}"
    if isinstance(reason, ssl.SSLError):
        return f"TLS handshake with {host}:{port} failed ({reason.reason or reason}); is it an https endpoint?"
    if isinstance(reason, ConnectionRefusedError):
        return f"connection refused by {host}:{port}: nothing is listening there (check the region or {ENDPOINT_ENV})"
    if isinstance(reason, TimeoutError):
        return f"timeout: {host}:{port} did not answer within {timeout:g} s"
    if isinstance(reason, http.client.RemoteDisconnected):
        return f"{host}:{port} closed the connection without an HTTP answer"
    if isinstance(reason, ConnectionResetError):
        return f"connection reset by {host}:{port}"
    if isinstance(reason, OSError):
        return f"network error talking to {host}:{port}: {redact(reason.strerror or str(reason))}"
    return f"could not reach {host}:{port}: {redact(str(reason))}"
