"""Sealing and opening write keys: the token format, tampering, workspaces, rotation, key config.

Real AES-GCM throughout (the `cryptography` package); nothing about encryption is mocked.
"""

from __future__ import annotations

import base64
import copy
import json
import pickle
import re

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from quickbot_segment_plugin.core import redaction
from quickbot_segment_plugin.core.errors import ConfigurationError, PluginError
from quickbot_segment_plugin.credentials.keyring import (
    CACHE_SIZE_ENV,
    CORRUPTED,
    ENCRYPTION_KEYS_ENV,
    Credentials,
    CredentialsError,
    KeyRing,
    WriteKey,
    derived_key_id,
    generate_key,
    shared_keyring,
)

WRITE_KEY = "9bX3kzT1QvLr5mWcYp2Ah7NdEo4Ug6Js"
KEY_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.:+/="


def ring_of(*keys: str, cache_size: int | None = None) -> KeyRing:
    environ = {ENCRYPTION_KEYS_ENV: ",".join(keys)}
    if cache_size is not None:
        environ[CACHE_SIZE_ENV] = str(cache_size)
    return KeyRing.from_env(environ)


@pytest.fixture
def key() -> str:
    return generate_key()


@pytest.fixture
def ring(key: str) -> KeyRing:
    return ring_of(key)


# --- round trip and the documented format ----------------------------------------------------


def test_a_sealed_write_key_opens_in_its_workspace(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY, "region": "eu"}, "workspace-1")

    credentials = ring.open(token, "workspace-1")

    assert credentials.write_key.reveal() == WRITE_KEY
    assert credentials.region == "eu"
    assert WRITE_KEY not in token


def test_region_defaults_to_us_and_is_stored_lowercase(ring: KeyRing) -> None:
    assert ring.open(ring.seal({"writeKey": WRITE_KEY}, "w"), "w").region == "us"
    assert ring.open(ring.seal({"writeKey": WRITE_KEY, "region": " EU "}, "w"), "w").region == "eu"
    assert ring.open(ring.seal({"writeKey": WRITE_KEY, "region": None}, "w"), "w").region == "us"


def test_the_token_follows_the_documented_v1_format(key: str, ring: KeyRing) -> None:
    """Decrypt by hand, from the README's description alone, with the cryptography package."""
    token = ring.seal({"writeKey": WRITE_KEY, "region": "eu"}, "ws.with.dots")

    prefix, version, kid, payload = token.split(".")
    assert (prefix, version) == ("qbseg", "v1")
    assert re.fullmatch(r"[A-Za-z0-9_-]{1,32}", kid)
    assert re.fullmatch(r"[A-Za-z0-9_-]+", payload)  # base64url, no padding
    raw_key = base64.urlsafe_b64decode(key + "=")
    assert kid == derived_key_id(raw_key) == ring.key_id(token) == ring.sealing_key_id
    data = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    nonce, sealed = data[:12], data[12:]
    plaintext = AESGCM(raw_key).decrypt(nonce, sealed, f"qbseg.v1.{kid}.ws.with.dots".encode())
    assert json.loads(plaintext) == {"region": "eu", "writeKey": WRITE_KEY}
    assert plaintext == b'{"region":"eu","writeKey":"' + WRITE_KEY.encode() + b'"}'


def test_every_token_gets_a_fresh_nonce(ring: KeyRing) -> None:
    tokens = {ring.seal({"writeKey": WRITE_KEY}, "w") for _ in range(50)}
    nonces = {base64.urlsafe_b64decode(t.split(".")[3] + "==")[:12] for t in tokens}
    assert len(tokens) == len(nonces) == 50


write_keys = st.text(alphabet=KEY_CHARS, min_size=8, max_size=256).filter(
    lambda value: not re.fullmatch(r"sha256:[0-9a-f]{12}", value)
)
regions = st.sampled_from(["us", "eu", "US", "EU", "Eu", " us", "eu\n"])
workspace_ids = st.text(min_size=1, max_size=80)
RING = ring_of(generate_key())


@settings(max_examples=150, deadline=None)
@given(write_key=write_keys, region=regions, workspace=workspace_ids)
def test_any_valid_write_key_survives_the_round_trip_and_only_in_its_workspace(
    write_key: str, region: str, workspace: str
) -> None:
    token = RING.seal({"writeKey": write_key, "region": region}, workspace)

    opened = RING.open_uncached(token, workspace)

    assert opened.write_key.reveal() == write_key
    assert opened.region == region.strip().lower()
    with pytest.raises(CredentialsError, match=CORRUPTED):
        RING.open_uncached(token, workspace + "x")


# --- tampering and other workspaces ----------------------------------------------------------


def assert_refused_as_corrupted(ring: KeyRing, token: str, workspace: str) -> None:
    with pytest.raises(CredentialsError) as caught:
        ring.open(token, workspace)
    assert CORRUPTED in str(caught.value)
    assert caught.value.field == "credentials"


def test_changing_any_character_of_a_token_makes_it_refused(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY, "region": "us"}, "w")
    for position, original in enumerate(token):
        for replacement in {"A", "b", "-", "."} - {original}:
            tampered = token[:position] + replacement + token[position + 1 :]
            assert_refused_as_corrupted(ring, tampered, "w")


def test_truncated_or_extended_tokens_are_refused(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY}, "w")
    for length in range(1, len(token)):
        assert_refused_as_corrupted(ring, token[:length], "w")
    for suffix in ("A", "AA", "AAA", "AAAA", ".", "=", "\n"):
        assert_refused_as_corrupted(ring, token + suffix, "w")


TAMPER_RING = ring_of(generate_key())
TAMPER_TOKEN = TAMPER_RING.seal({"writeKey": WRITE_KEY, "region": "eu"}, "w")


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, len(TAMPER_TOKEN) - 1), replacement=st.characters())
def test_any_replaced_character_anywhere_is_refused(position: int, replacement: str) -> None:
    if TAMPER_TOKEN[position] == replacement:
        return
    tampered = TAMPER_TOKEN[:position] + replacement + TAMPER_TOKEN[position + 1 :]
    assert_refused_as_corrupted(TAMPER_RING, tampered, "w")


def test_a_token_copied_into_another_workspace_does_not_open(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY}, "workspace-a")

    with pytest.raises(CredentialsError) as caught:
        ring.open(token, "workspace-b")

    assert CORRUPTED in str(caught.value)
    assert "another workspace" in str(caught.value)
    assert "'workspace-b'" in str(caught.value)


def test_the_cache_never_lets_a_token_open_in_another_workspace(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY}, "workspace-a")
    ring.open(token, "workspace-a")  # now cached

    with pytest.raises(CredentialsError, match="another workspace"):
        ring.open(token, "workspace-b")


def test_a_token_sealed_by_a_key_that_is_not_configured_names_its_key_id(key: str) -> None:
    token = ring_of(key).seal({"writeKey": WRITE_KEY}, "w")
    other = ring_of(generate_key())

    with pytest.raises(CredentialsError) as caught:
        other.open(token, "w")

    message = str(caught.value)
    assert f"key id '{ring_of(key).sealing_key_id}'" in message
    assert "missing from QUICKBOT_ENCRYPTION_KEYS" in message
    assert other.sealing_key_id in message  # what the ring does have


def test_a_token_of_a_newer_format_says_to_upgrade(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY}, "w").replace("qbseg.v1.", "qbseg.v2.")

    with pytest.raises(CredentialsError, match=r"format v2.*reads v1.*upgrade"):
        ring.open(token, "w")


@pytest.mark.parametrize(
    "token",
    ["not a token", "abc.v1.kid.AAAA", "qbseg", "qbseg.", "qbseg.v1", "qbseg.v1.kid", "qbseg.v1.k.d.e"],
)
def test_text_that_is_not_a_token_is_refused_clearly(ring: KeyRing, token: str) -> None:
    assert_refused_as_corrupted(ring, token, "w")


def test_a_raw_write_key_stored_instead_of_a_token_gets_a_hint(ring: KeyRing) -> None:
    with pytest.raises(CredentialsError, match="raw write key was stored") as caught:
        ring.open(WRITE_KEY, "w")
    assert WRITE_KEY not in str(caught.value)


@pytest.mark.parametrize("token", [None, 42, "", "   "])
def test_a_missing_token_is_a_clear_error(ring: KeyRing, token: object) -> None:
    with pytest.raises(CredentialsError) as caught:
        ring.open(token, "w")  # type: ignore[arg-type]
    assert caught.value.field == "credentials"


def test_an_absurdly_long_token_is_refused_without_decoding(ring: KeyRing) -> None:
    assert_refused_as_corrupted(ring, "qbseg.v1.kid." + "A" * 100_000, "w")


@pytest.mark.parametrize("workspace", ["", None])
def test_a_workspace_id_is_required(ring: KeyRing, workspace: object) -> None:
    with pytest.raises(CredentialsError) as caught:
        ring.seal({"writeKey": WRITE_KEY}, workspace)  # type: ignore[arg-type]
    assert caught.value.field == "workspace_id"


# --- rotation ------------------------------------------------------------------------------


def test_rotation_old_tokens_open_after_a_new_key_is_prepended_and_reseal_moves_them(key: str) -> None:
    old_ring = ring_of(key)
    token = old_ring.seal({"writeKey": WRITE_KEY, "region": "eu"}, "w")
    new_key = generate_key()
    rotated_ring = ring_of(new_key, key)

    assert rotated_ring.open(token, "w").write_key.reveal() == WRITE_KEY
    resealed = rotated_ring.reseal(token, "w")

    assert rotated_ring.key_id(token) == old_ring.sealing_key_id
    assert rotated_ring.key_id(resealed) == rotated_ring.sealing_key_id != old_ring.sealing_key_id
    new_only = ring_of(new_key)  # the old key retired
    assert new_only.open(resealed, "w") == Credentials(writeKey=WRITE_KEY, region="eu")
    with pytest.raises(CredentialsError, match="missing from QUICKBOT_ENCRYPTION_KEYS"):
        new_only.open(token, "w")


def test_reseal_keeps_the_workspace_binding(key: str) -> None:
    new_key = generate_key()
    token = ring_of(key).seal({"writeKey": WRITE_KEY}, "w")
    resealed = ring_of(new_key, key).reseal(token, "w")

    with pytest.raises(CredentialsError, match="another workspace"):
        ring_of(new_key).open(resealed, "other")
    with pytest.raises(CredentialsError, match="another workspace"):
        ring_of(new_key, key).reseal(token, "other")


def test_explicit_key_ids_name_the_keys_in_tokens() -> None:
    first, second = generate_key(), generate_key()
    ring = ring_of(f"2025-06:{first}", f"2024-01:{second}")
    assert ring.key_ids == ("2025-06", "2024-01")

    token = ring.seal({"writeKey": WRITE_KEY}, "w")

    assert token.startswith("qbseg.v1.2025-06.")
    assert ring_of(f"2025-06:{first}").open(token, "w").write_key.reveal() == WRITE_KEY


def test_a_key_opens_whatever_base64_spelling_the_operator_used(key: str) -> None:
    raw = base64.urlsafe_b64decode(key + "=")
    standard = base64.b64encode(raw).decode()
    token = ring_of(key).seal({"writeKey": WRITE_KEY}, "w")

    assert ring_of(standard).open(token, "w").write_key.reveal() == WRITE_KEY
    assert ring_of(key + "=").open(token, "w").write_key.reveal() == WRITE_KEY
    assert ring_of(f" {key} ,").sealing_key_id == ring_of(key).sealing_key_id


# --- QUICKBOT_ENCRYPTION_KEYS errors ---------------------------------------------------------


@pytest.mark.parametrize("value", [None, "", "   ", ",", " , ,"])
def test_missing_encryption_keys_is_an_error_never_a_default(value: str | None) -> None:
    environ = {} if value is None else {ENCRYPTION_KEYS_ENV: value}
    with pytest.raises(ConfigurationError) as caught:
        KeyRing.from_env(environ)
    assert caught.value.field == ENCRYPTION_KEYS_ENV
    assert "QUICKBOT_ENCRYPTION_KEYS is not set" in str(caught.value)
    assert "quickbot-segment keygen" in str(caught.value)


def test_from_env_reads_the_process_environment(monkeypatch: pytest.MonkeyPatch, key: str) -> None:
    monkeypatch.delenv(ENCRYPTION_KEYS_ENV, raising=False)
    with pytest.raises(ConfigurationError, match="not set"):
        KeyRing.from_env()
    monkeypatch.setenv(ENCRYPTION_KEYS_ENV, key)
    assert KeyRing.from_env().sealing_key_id == ring_of(key).sealing_key_id


SHORT_KEY = base64.urlsafe_b64encode(bytes(range(16))).decode()
LONG_KEY = base64.urlsafe_b64encode(bytes(range(48))).decode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (SHORT_KEY, "entry 1 of QUICKBOT_ENCRYPTION_KEYS is 16 bytes long; AES-256 needs exactly 32"),
        (LONG_KEY, "entry 1 of QUICKBOT_ENCRYPTION_KEYS is 48 bytes long"),
        ("not base64!", "entry 1 of QUICKBOT_ENCRYPTION_KEYS is not a base64 key"),
        ("GOOD,key one key two", "entry 2 of QUICKBOT_ENCRYPTION_KEYS is not a base64 key"),
        ("bad id:GOOD", "entry 1 of QUICKBOT_ENCRYPTION_KEYS has an invalid key id"),
        ("k:GOOD,k:OTHER", "key id 'k' appears twice"),
        ("a:GOOD,b:GOOD", "the same key appears twice"),
        ("GOOD,GOOD", "appears twice"),
    ],
)
def test_malformed_encryption_keys_say_which_entry_and_how_to_fix_it(value: str, expected: str) -> None:
    good, other = generate_key(), generate_key()
    environ = {ENCRYPTION_KEYS_ENV: value.replace("GOOD", good).replace("OTHER", other)}

    with pytest.raises(ConfigurationError) as caught:
        KeyRing.from_env(environ)

    assert expected in str(caught.value)
    assert caught.value.field == ENCRYPTION_KEYS_ENV
    assert good not in str(caught.value) and other not in str(caught.value)
    if "twice" not in expected:
        assert "quickbot-segment keygen" in str(caught.value)


def test_generated_keys_are_32_random_bytes_in_urlsafe_base64() -> None:
    keys = {generate_key() for _ in range(100)}
    assert len(keys) == 100
    for generated in keys:
        assert re.fullmatch(r"[A-Za-z0-9_-]{43}", generated)
        assert len(base64.urlsafe_b64decode(generated + "=")) == 32


def test_a_key_ring_never_shows_key_material(key: str) -> None:
    ring = ring_of(key)
    assert key not in repr(ring)
    assert ring.sealing_key_id in repr(ring)


# --- validating the credentials form -----------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "expected"),
    [
        ({}, "writeKey", "writeKey is required"),
        ({"writeKey": None}, "writeKey", "writeKey is required"),
        ({"writeKey": "   "}, "writeKey", "writeKey is required"),
        ({"writeKey": 12345678}, "writeKey", "writeKey must be text, got int"),
        ({"writeKey": "abc def ghi jkl"}, "writeKey", "writeKey contains whitespace (character 4)"),
        ({"writeKey": "abcdefg"}, "writeKey", "writeKey has 7 characters; a Segment write key has 8 to 256"),
        ({"writeKey": "a" * 257}, "writeKey", "writeKey has 257 characters"),
        ({"writeKey": "abcdefgh€ijk"}, "writeKey", "never has (character 9)"),
        ({"writeKey": 'abcd"efgh'}, "writeKey", "never has (character 5)"),
        ({"writeKey": "sha256:0123456789ab"}, "writeKey", "is a key fingerprint"),
        ({"writeKey": WRITE_KEY, "region": "de"}, "region", 'region must be "us" or "eu", got \'de\''),
        ({"writeKey": WRITE_KEY, "region": 1}, "region", 'region must be "us"'),
        ({"writeKey": WRITE_KEY, "apiKey": "x"}, "apiKey", "unknown credentials field 'apiKey'"),
        ({"writeKey": WRITE_KEY, "write_key": WRITE_KEY}, "writeKey", "give the write key once"),
        ({"Write Key": WRITE_KEY}, "Write Key", "unknown credentials field 'Write Key'"),
        ({"writekey": WRITE_KEY}, "writekey", "(the field is spelt writeKey)"),
        ([WRITE_KEY], "credentials", "credentials must be an object"),
    ],
)
def test_invalid_form_values_name_the_field(values: object, field: str, expected: str, ring: KeyRing) -> None:
    with pytest.raises(CredentialsError) as caught:
        ring.seal(values, "w")  # type: ignore[arg-type]
    assert caught.value.field == field
    assert expected in str(caught.value)
    assert isinstance(caught.value, PluginError)


@pytest.mark.parametrize("length", [8, 256])
def test_write_key_length_limits_are_inclusive(length: int, ring: KeyRing) -> None:
    write_key = ("Ab3_-.:+/=" * 30)[:length]
    assert ring.open(ring.seal({"writeKey": write_key}, "w"), "w").write_key.reveal() == write_key


def test_surrounding_whitespace_from_a_paste_is_dropped(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": f"  {WRITE_KEY}\n"}, "w")
    assert ring.open(token, "w").write_key.reveal() == WRITE_KEY


def test_credentials_reject_unknown_fields_and_accept_the_python_name() -> None:
    assert Credentials.model_validate({"write_key": WRITE_KEY}).write_key.reveal() == WRITE_KEY
    with pytest.raises(CredentialsError, match="unknown credentials fields 'a', 'b'"):
        Credentials.model_validate({"writeKey": WRITE_KEY, "a": 1, "b": 2})


def test_malformed_json_credentials_are_a_credentials_error() -> None:
    assert Credentials.model_validate_json(f'{{"writeKey": "{WRITE_KEY}"}}').region == "us"
    with pytest.raises(CredentialsError, match="JSON object"):
        Credentials.model_validate_json('{"writeKey": ')


def test_credentials_are_frozen() -> None:
    credentials = Credentials(writeKey=WRITE_KEY)
    with pytest.raises(Exception, match="frozen"):
        credentials.region = "eu"  # type: ignore[misc]


# --- WriteKey shows only its fingerprint --------------------------------------------------------


def test_a_write_key_prints_only_its_fingerprint() -> None:
    write_key = WriteKey(WRITE_KEY)
    expected = redaction.fingerprint(WRITE_KEY)

    assert write_key.fingerprint == expected
    assert str(write_key) == expected
    assert repr(write_key) == f"WriteKey('{expected}')"
    assert f"{write_key}" == expected
    assert f"{write_key:>30}".strip() == expected
    assert "%s %r" % (write_key, write_key) == f"{expected} WriteKey('{expected}')"  # noqa: UP031
    assert write_key.reveal() == WRITE_KEY


def test_credentials_dumps_show_only_the_fingerprint() -> None:
    credentials = Credentials(writeKey=WRITE_KEY, region="eu")
    expected = redaction.fingerprint(WRITE_KEY)

    for text in (
        repr(credentials),
        str(credentials),
        credentials.model_dump_json(),
        json.dumps(credentials.model_dump()),
        json.dumps(credentials.model_dump(mode="json", by_alias=True)),
    ):
        assert WRITE_KEY not in text
        assert expected in text
    assert credentials.model_dump(by_alias=True) == {"writeKey": expected, "region": "eu"}
    with pytest.raises(TypeError):
        json.dumps(WriteKey(WRITE_KEY))


def test_a_fingerprint_never_goes_back_in_as_a_key() -> None:
    dumped = Credentials(writeKey=WRITE_KEY).model_dump(by_alias=True)
    with pytest.raises(CredentialsError, match="fingerprint"):
        Credentials.model_validate(dumped)


def test_write_keys_compare_and_hash_by_value() -> None:
    first, same, other = WriteKey(WRITE_KEY), WriteKey(WRITE_KEY), WriteKey(WRITE_KEY[::-1])
    assert first == same and hash(first) == hash(same)
    assert first != other
    assert first != WRITE_KEY  # a key is not its text
    assert {first: "a", same: "b"} == {first: "b"}
    assert Credentials(writeKey=WRITE_KEY) == Credentials(writeKey=first)
    assert len({Credentials(writeKey=WRITE_KEY), Credentials(writeKey=WRITE_KEY)}) == 1


def test_a_write_key_is_never_pickled_but_copies_fine() -> None:
    credentials = Credentials(writeKey=WRITE_KEY)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(credentials)
    assert copy.deepcopy(credentials) == credentials
    assert credentials.model_copy(deep=True) == credentials


def test_the_json_schema_marks_the_key_write_only() -> None:
    schema = Credentials.model_json_schema()
    assert schema["properties"]["writeKey"]["writeOnly"] is True
    assert schema["properties"]["writeKey"]["format"] == "password"
    assert schema["additionalProperties"] is False


def test_a_write_key_field_in_another_model_raises_the_credentials_error() -> None:
    class Holder(BaseModel):
        key: WriteKey

    assert Holder(key=WRITE_KEY).key == WriteKey(WRITE_KEY)  # type: ignore[arg-type]
    with pytest.raises(CredentialsError, match="whitespace"):
        Holder(key="abc def ghijk")  # type: ignore[arg-type]


# --- the cache and the known-secret scrubber -----------------------------------------------------


def test_a_token_is_decrypted_once_and_then_served_from_the_cache(ring: KeyRing) -> None:
    token = ring.seal({"writeKey": WRITE_KEY}, "w")

    first = ring.open(token, "w")
    second = ring.open(token, "w")

    assert first is second
    assert ring.cached == 1
    assert ring.open_uncached(token, "w") is not first


def test_the_cache_is_bounded_and_failures_are_not_cached(key: str) -> None:
    ring = ring_of(key, cache_size=2)
    tokens = [ring.seal({"writeKey": f"{WRITE_KEY}{n}"}, "w") for n in range(3)]
    for token in tokens:
        ring.open(token, "w")
    assert ring.cached == 2
    with pytest.raises(CredentialsError):
        ring.open(tokens[0], "other")
    assert ring.cached == 2
    ring.clear_cache()
    assert ring.cached == 0


def test_a_zero_cache_size_turns_the_cache_off(key: str) -> None:
    ring = ring_of(key, cache_size=0)
    token = ring.seal({"writeKey": WRITE_KEY}, "w")
    assert ring.open(token, "w") is not ring.open(token, "w")
    assert ring.cached == 0


def test_a_bad_cache_size_names_its_variable(key: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        KeyRing.from_env({ENCRYPTION_KEYS_ENV: key, CACHE_SIZE_ENV: "lots"})
    assert caught.value.field == CACHE_SIZE_ENV


def test_the_shared_key_ring_follows_the_environment(key: str) -> None:
    environ = {ENCRYPTION_KEYS_ENV: key}
    first = shared_keyring(environ)
    assert shared_keyring(dict(environ)) is first
    environ[ENCRYPTION_KEYS_ENV] = f"{generate_key()},{key}"
    assert shared_keyring(environ) is not first
    assert shared_keyring(environ).key_ids[1] == first.sealing_key_id


def test_an_opened_key_is_scrubbed_from_any_later_log_text(key: str) -> None:
    write_key = "OpenedKey" + generate_key()[:20]
    ring = ring_of(key)
    token = ring.seal({"writeKey": write_key}, "w")
    redaction.known_secrets.discard(write_key)  # as if another process had sealed it

    ring.open(token, "w")

    scrubbed = redaction.redact(f"upstream said: bad key {write_key}!")
    assert write_key not in scrubbed
    assert redaction.fingerprint(write_key) in scrubbed
