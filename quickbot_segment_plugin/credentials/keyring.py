"""Sealing and opening a workspace's Segment write key.

The host stores only the token `KeyRing.seal` returns; the keys that open it live in the
operator's environment (`QUICKBOT_ENCRYPTION_KEYS`), never next to the tokens, so a copy of
the database alone yields no write key. The plugin is the only code that opens a token.

Token format, version 1 (one line of ASCII, no whitespace)::

    qbseg.v1.<kid>.<payload>

- `qbseg`    fixed prefix, so a token is recognisable (and a raw write key stored by mistake is not
             taken for one);
- `v1`       the format version; a later format gets a new version and this code refuses it clearly;
- `<kid>`    the id of the encryption key that sealed it: 1 to 32 characters of `A-Z a-z 0-9 _ -`;
- `<payload>` base64url without padding (canonical: no stray bits) of `nonce || ciphertext || tag`:
             a fresh random 12-byte nonce, then AES-256-GCM output with its 16-byte tag.

The associated data is the UTF-8 of `qbseg.v1.<kid>.<workspace_id>` (a key id has no dot, so the
pair is unambiguous): a token copied into another workspace, relabelled with another key id, or
presented as another version fails authentication. The plaintext is the compact JSON of the
validated credentials, keys sorted: `{"region":"us","writeKey":"..."}`.

Encryption keys (`QUICKBOT_ENCRYPTION_KEYS`): comma-separated entries `[kid:]KEY`, where KEY is 32
random bytes in base64 (url-safe or standard alphabet, padding optional), as printed by
`quickbot-segment keygen`. Without an explicit `kid:` the key id is the first 10 hex digits of a
SHA-256 of the key (a name for the key, not a way back to it). The first entry seals; every entry
opens; an operator rotates by prepending a new key, re-sealing, then removing the old one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pydantic import BaseModel, ConfigDict, Field, GetCoreSchemaHandler, ValidationError, model_validator
from pydantic_core import core_schema

from ..core import ConfigurationError, LruCache, PluginError, Region, fingerprint, known_secrets, shorten
from .settings import DEFAULT_CACHE_SIZE, CredentialsSettings

if TYPE_CHECKING:
    from typing import Self

    from pydantic import GetJsonSchemaHandler
    from pydantic.json_schema import JsonSchemaValue

__all__ = [
    "CACHE_SIZE_ENV",
    "CORRUPTED",
    "ENCRYPTION_KEYS_ENV",
    "TOKEN_PREFIX",
    "TOKEN_VERSION",
    "Credentials",
    "CredentialsError",
    "KeyRing",
    "WriteKey",
    "generate_key",
    "shared_keyring",
]

log = logging.getLogger("quickbot_segment_plugin.credentials")

ENCRYPTION_KEYS_ENV: Final = "QUICKBOT_ENCRYPTION_KEYS"
CACHE_SIZE_ENV: Final = "QUICKBOT_CREDENTIALS_CACHE_SIZE"

TOKEN_PREFIX: Final = "qbseg"
TOKEN_VERSION: Final = "v1"
KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
# A v1 token of the longest write key is about 440 characters; anything far longer is not one,
# and refusing it early keeps a hostile value from costing a large base64 decode.
MAX_TOKEN_CHARS: Final = 4096

WRITE_KEY_MIN_CHARS: Final = 8
WRITE_KEY_MAX_CHARS: Final = 256
WRITE_KEY_ALLOWED = "letters, digits and _ - . : + / ="
# The characters of WRITE_KEY_ALLOWED as a regex class, shared with the credentials form's JSON schema
# (`schemas.py`) so the form and the sealing code accept the same keys.
WRITE_KEY_CHARS: Final = r"[A-Za-z0-9_\-.:+/=]"
_WRITE_KEY_CHAR = re.compile(WRITE_KEY_CHARS)
_WRITE_KEY = re.compile(rf"{WRITE_KEY_CHARS}{{{WRITE_KEY_MIN_CHARS},{WRITE_KEY_MAX_CHARS}}}")
_FINGERPRINT = re.compile(r"sha256:[0-9a-f]{12}")
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_VERSION = re.compile(r"v[0-9]{1,4}")
_BASE64 = re.compile(r"[A-Za-z0-9+/_-]+={0,2}")

CORRUPTED: Final = "credentials are corrupted or were sealed with another key"
KEYGEN_HINT: Final = (
    f"make one with `quickbot-segment keygen` and set {ENCRYPTION_KEYS_ENV} to it "
    "(comma-separated when there are several; the first one seals)"
)
WHERE_TO_FIND_THE_KEY = "in Segment: Connections > Sources > your source > Settings > API Keys"


class CredentialsError(PluginError):
    """Credentials that cannot be sealed or opened; `field` says which input is at fault.

    `field` is `writeKey` or `region` for a form value, `credentials` for a token that does not
    open, `workspace_id` for a missing workspace. The text never contains a write key.
    """

    def __init__(self, message: str, *, field: str = "credentials") -> None:
        super().__init__(message, field=field)


def _fail(message: str, field: str) -> NoReturn:
    """Raise outside of any `except` block so no exception that held a secret gets chained.

    Messages are built not to quote secrets; scrubbing the keys this process has seen is a
    second line, for a token whose key-id part was forged from a key.
    """
    raise CredentialsError(known_secrets.scrub(message), field=field)


# --- the write key -------------------------------------------------------------------------


def _checked_write_key(raw: object) -> str:
    """The write key the user meant, or an error that says what is wrong without quoting it.

    Surrounding whitespace is a copy-and-paste artefact and is dropped; whitespace inside, a
    character no Segment key has, or an absurd length means the paste went wrong.
    """
    if isinstance(raw, WriteKey):
        return raw.reveal()
    if raw is None:
        _fail(
            f"writeKey is required: paste the Write Key of your Segment source ({WHERE_TO_FIND_THE_KEY}).",
            "writeKey",
        )
    if not isinstance(raw, str):
        _fail(f"writeKey must be text, got {type(raw).__name__}.", "writeKey")
    value = raw.strip()
    if _WRITE_KEY.fullmatch(value) and not _FINGERPRINT.fullmatch(value):
        return value  # the common case; the checks below only explain a rejection
    if not value:
        _fail(
            f"writeKey is required: paste the Write Key of your Segment source ({WHERE_TO_FIND_THE_KEY}).",
            "writeKey",
        )
    for position, char in enumerate(value, start=1):
        if char.isspace():
            _fail(
                f"writeKey contains whitespace (character {position}); a Segment write key is one "
                f"unbroken token: copy it again {WHERE_TO_FIND_THE_KEY}.",
                "writeKey",
            )
    if not WRITE_KEY_MIN_CHARS <= len(value) <= WRITE_KEY_MAX_CHARS:
        _fail(
            f"writeKey has {len(value)} character{'' if len(value) == 1 else 's'}; a Segment write key has "
            f"{WRITE_KEY_MIN_CHARS} to {WRITE_KEY_MAX_CHARS}.",
            "writeKey",
        )
    for position, char in enumerate(value, start=1):
        if not _WRITE_KEY_CHAR.fullmatch(char):
            _fail(
                f"writeKey contains a character a Segment write key never has (character {position}); "
                f"write keys use only {WRITE_KEY_ALLOWED}.",
                "writeKey",
            )
    if _FINGERPRINT.fullmatch(value):
        _fail(
            "writeKey is a key fingerprint (sha256:...), which logs show in place of a key; "
            f"paste the key itself {WHERE_TO_FIND_THE_KEY}.",
            "writeKey",
        )
    return value


class WriteKey:
    """A Segment write key that shows only its fingerprint, wherever it is printed or dumped.

    Like pydantic's SecretStr, but `repr`, `str`, `format` and pydantic/JSON dumps give
    `sha256:<12 hex>`, which lets an operator tell keys apart without exposing one. `reveal()`
    is the single, greppable way to the key. Pickling is refused: a pickled key is a key in
    clear on a task queue or in a cache; pass the sealed token instead.
    """

    __slots__ = ("_fingerprint", "_value")

    def __init__(self, value: object) -> None:
        # Any input, as a form or pydantic gives it: a bad one is a CredentialsError that does not quote it.
        self._value = _checked_write_key(value)
        self._fingerprint = fingerprint(self._value)  # a SHA-256 once, not on every execute

    def reveal(self) -> str:
        """The key itself, for the Segment client and nothing else."""
        return self._value

    @property
    def fingerprint(self) -> str:
        return self._fingerprint

    def __repr__(self) -> str:
        return f"WriteKey({self.fingerprint!r})"

    def __str__(self) -> str:
        return self.fingerprint

    def __format__(self, format_spec: str) -> str:
        return format(self.fingerprint, format_spec)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, WriteKey):
            return NotImplemented
        return hmac.compare_digest(self._value.encode("utf-8"), other._value.encode("utf-8"))

    def __hash__(self) -> int:
        return hash((WriteKey, self._value))

    def __copy__(self) -> WriteKey:
        return self  # immutable

    def __deepcopy__(self, memo: dict[int, object]) -> WriteKey:
        return self  # immutable

    def __reduce__(self) -> NoReturn:
        raise TypeError("a WriteKey cannot be pickled (it would be stored in clear); pass the sealed token")

    @classmethod
    def __get_pydantic_core_schema__(cls, source: type[Any], handler: GetCoreSchemaHandler) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls._coerce,
            serialization=core_schema.plain_serializer_function_ser_schema(
                lambda key: key.fingerprint, when_used="always"
            ),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return {
            "type": "string",
            "format": "password",
            "writeOnly": True,
            "minLength": WRITE_KEY_MIN_CHARS,
            "maxLength": WRITE_KEY_MAX_CHARS,
        }

    @classmethod
    def _coerce(cls, value: object) -> WriteKey:
        return value if isinstance(value, WriteKey) else cls(value)


# --- the credentials form ------------------------------------------------------------------

_FORM_FIELDS = {"writeKey": "writeKey", "write_key": "writeKey", "region": "region"}


def _showable_name(name: object) -> str | None:
    """A field name safe to quote back, or None when it could be a pasted secret.

    Form field names are short words (`apiKey`, `write_key`); a random token of 8 or more
    characters with digits or runs of capitals is more likely a key pasted into the wrong place.
    """
    if not isinstance(name, str) or not name.isascii() or not name.isprintable():
        return None
    if len(name) < WRITE_KEY_MIN_CHARS:
        return name
    if len(name) <= 40 and re.fullmatch(r"[A-Za-z][A-Za-z _-]*", name) and not re.search("[A-Z]{2}", name):
        return name
    return None


def _checked_region(raw: object) -> Region:
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return "us"
    if isinstance(raw, str):
        value = raw.strip().lower()
        if value == "us":
            return "us"
        if value == "eu":
            return "eu"
        # A short word is a typo worth quoting; anything longer might be a key in the wrong field.
        if re.fullmatch(r"[A-Za-z0-9-]{1,7}", raw.strip()):
            _fail(f'region must be "us" or "eu", got {raw.strip()!r}.', "region")
    _fail('region must be "us" (api.segment.io) or "eu" (events.eu1.segmentapis.com).', "region")


def _checked_form(data: object) -> dict[str, object]:
    if not isinstance(data, Mapping):
        _fail("credentials must be an object with writeKey and region.", "credentials")
    unknown = [name for name in data if name not in _FORM_FIELDS]
    if unknown:
        shown = [_showable_name(name) for name in unknown]
        names = ", ".join(repr(name) if name is not None else "(a name that looks like a secret)" for name in shown)
        plural = "s" if len(unknown) > 1 else ""
        misspelt = any(isinstance(name, str) and re.sub(r"[\s_-]", "", name).lower() == "writekey" for name in unknown)
        hint = " (the field is spelt writeKey)" if misspelt else ""
        _fail(
            f"unknown credentials field{plural} {names}: the Segment credentials form has only writeKey and "
            f"region{hint}.",
            shown[0] if shown[0] is not None else "credentials",
        )
    if "writeKey" in data and "write_key" in data:
        _fail("give the write key once, as writeKey (write_key is the same field).", "writeKey")
    raw_key = data["writeKey"] if "writeKey" in data else data.get("write_key")
    return {"writeKey": WriteKey(raw_key), "region": _checked_region(data.get("region"))}


class Credentials(BaseModel):
    """The validated credentials form of one Segment source: its write key and region.

    Built from the form's values (`{"writeKey": ..., "region": ...}`); any invalid input raises
    `CredentialsError` naming the field (never pydantic's `ValidationError`, whose text and
    `errors()` would carry the rejected input, which may be the key).
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    write_key: WriteKey = Field(alias="writeKey", title="Write Key")
    region: Region = "us"

    @model_validator(mode="before")
    @classmethod
    def _check_form(cls, data: Any) -> Any:
        return _checked_form(data)

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, **kwargs: Any) -> Self:
        """As pydantic's, but malformed JSON is a `CredentialsError` that does not quote the input."""
        try:
            return super().model_validate_json(json_data, **kwargs)
        except ValidationError:
            pass  # raised below, outside this block, so the error that quotes the input is not chained
        _fail("credentials must be a JSON object with writeKey and region.", "credentials")

    @classmethod
    def from_form(cls, values: Mapping[str, object] | Credentials) -> Credentials:
        """Validate the credentials form's values (the host's `seal_credentials` input)."""
        if isinstance(values, Credentials):
            return values
        return cls.model_validate(values)


# --- encryption keys -----------------------------------------------------------------------


def generate_key() -> str:
    """A new encryption key: 32 random bytes, url-safe base64 without padding (43 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).rstrip(b"=").decode("ascii")


def derived_key_id(key: bytes) -> str:
    """The key id of a key given without one: stable, short, and no help in guessing the key."""
    return hashlib.sha256(b"quickbot-segment key id\x00" + key).hexdigest()[:10]


def _decode_key_material(text: str) -> bytes | None:
    if not _BASE64.fullmatch(text):
        return None
    standard = text.replace("-", "+").replace("_", "/").rstrip("=")
    standard += "=" * (-len(standard) % 4)
    try:
        return base64.b64decode(standard, validate=True)
    except (binascii.Error, ValueError):
        return None


def _config_error(message: str) -> NoReturn:
    raise ConfigurationError(message, field=ENCRYPTION_KEYS_ENV)


def parse_encryption_keys(text: str) -> list[tuple[str, bytes]]:
    """`QUICKBOT_ENCRYPTION_KEYS` as (key id, key) pairs, first (sealing) key first.

    Errors say which entry (counting from 1) is wrong and how to make a good one, and never
    quote key material. Empty entries (a trailing comma) are ignored; no entry at all is an
    error, never a fallback to some default key.
    """
    entries = [(position, entry.strip()) for position, entry in enumerate(text.split(","), start=1)]
    entries = [(position, entry) for position, entry in entries if entry]
    if not entries:
        _config_error(
            f"{ENCRYPTION_KEYS_ENV} is not set: the Segment block needs an encryption key to seal and "
            f"open write keys, and there is no default one; {KEYGEN_HINT}."
        )
    keys: list[tuple[str, bytes]] = []
    for position, entry in entries:
        where = f"entry {position} of {ENCRYPTION_KEYS_ENV}"
        key_id, separator, material = entry.rpartition(":")
        if separator and not _KEY_ID.fullmatch(key_id):
            _config_error(
                f"{where} has an invalid key id before ':' (use 1 to 32 letters, digits, _ or -); "
                f"the format is [kid:]KEY, {KEYGEN_HINT}."
            )
        key = _decode_key_material(material)
        if key is None:
            _config_error(
                f"{where} is not a base64 key (keys are separated by commas, each 32 random bytes in "
                f"base64); {KEYGEN_HINT}."
            )
        if len(key) != KEY_BYTES:
            _config_error(
                f"{where} is {len(key)} bytes long; AES-256 needs exactly {KEY_BYTES} random bytes; {KEYGEN_HINT}."
            )
        keys.append((key_id if separator else derived_key_id(key), key))
    return keys


# --- tokens --------------------------------------------------------------------------------


def _plaintext_of(credentials: Credentials) -> bytes:
    """The bytes a token encrypts: compact JSON of the form's values, keys sorted."""
    document = {"region": credentials.region, "writeKey": credentials.write_key.reveal()}
    return json.dumps(document, separators=(",", ":"), sort_keys=True).encode("utf-8")


def _associated_data(key_id: str, workspace_id: str) -> bytes:
    header = f"{TOKEN_PREFIX}.{TOKEN_VERSION}.{key_id}.".encode("ascii")
    return header + workspace_id.encode("utf-8", "surrogatepass")


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(text: str) -> bytes | None:
    """Strict base64url: only the canonical spelling decodes, so no character can change unnoticed."""
    if not re.fullmatch(r"[A-Za-z0-9_-]*", text) or len(text) % 4 == 1:
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    return data if _b64url(data) == text else None


def _checked_workspace(workspace_id: object) -> str:
    if not isinstance(workspace_id, str) or not workspace_id:
        _fail("workspace_id is required to seal or open credentials (they are bound to it).", "workspace_id")
    return workspace_id


def _quoted_workspace(workspace_id: str) -> str:
    return repr(shorten(workspace_id, 64, "..."))


def _parse_token(token: object) -> tuple[str, bytes, bytes]:
    """(key id, nonce, ciphertext with tag) of a v1 token; never quotes the token back."""
    if not isinstance(token, str):
        _fail(
            f"credentials must be the token returned by seal_credentials (text), got {type(token).__name__}.",
            "credentials",
        )
    if not token.strip():
        _fail("no Segment credentials: add the Segment credentials (write key) to this block.", "credentials")
    if len(token) > MAX_TOKEN_CHARS:
        _fail(f"{CORRUPTED}: the token is {len(token)} characters long, far more than any token.", "credentials")
    parts = token.split(".")
    if parts[0] != TOKEN_PREFIX:
        looks_like_a_key = True
        try:
            _checked_write_key(token)
        except CredentialsError:
            looks_like_a_key = False
        hint = (
            " It looks like a raw write key was stored instead of a sealed token: seal it with "
            "seal_credentials or `quickbot-segment credentials seal`."
            if looks_like_a_key
            else ""
        )
        _fail(
            f"{CORRUPTED}: this is not a Segment credentials token (one starts with "
            f"'{TOKEN_PREFIX}.{TOKEN_VERSION}.').{hint}",
            "credentials",
        )
    if len(parts) < 2 or parts[1] != TOKEN_VERSION:
        if len(parts) >= 2 and _VERSION.fullmatch(parts[1]):
            _fail(
                f"{CORRUPTED}: the token uses format {parts[1]}, which this version of the plugin cannot "
                f"read (it reads {TOKEN_VERSION}); upgrade quickbot-segment-plugin.",
                "credentials",
            )
        _fail(f"{CORRUPTED}: the token's format version is malformed.", "credentials")
    if len(parts) != 4:
        _fail(f"{CORRUPTED}: a token has exactly four dot-separated parts.", "credentials")
    key_id, payload = parts[2], parts[3]
    if not _KEY_ID.fullmatch(key_id):
        _fail(f"{CORRUPTED}: the token's key id is malformed.", "credentials")
    data = _unb64url(payload)
    if data is None:
        _fail(f"{CORRUPTED}: the encrypted part is not canonical base64url.", "credentials")
    if len(data) < NONCE_BYTES + TAG_BYTES + 1:
        _fail(f"{CORRUPTED}: the encrypted part is too short.", "credentials")
    return key_id, data[:NONCE_BYTES], data[NONCE_BYTES:]


class KeyRing:
    """The operator's encryption keys: the first seals, every one opens.

    Holds only AES-GCM contexts (no key bytes as attributes) and a bounded cache of opened
    credentials keyed by (token, workspace id); opened credentials are immutable, so sharing
    them between conversations and threads is safe.
    """

    def __init__(self, keys: Iterable[tuple[str, bytes]], *, cache_size: int = DEFAULT_CACHE_SIZE) -> None:
        ciphers: dict[str, AESGCM] = {}
        seen: set[bytes] = set()
        for key_id, key in keys:
            if not _KEY_ID.fullmatch(key_id):
                _config_error(f"a key id must be 1 to 32 letters, digits, _ or -; {KEYGEN_HINT}.")
            if len(key) != KEY_BYTES:
                _config_error(f"an encryption key must be {KEY_BYTES} bytes, got {len(key)}; {KEYGEN_HINT}.")
            if key_id in ciphers:
                _config_error(f"key id {key_id!r} appears twice in {ENCRYPTION_KEYS_ENV}; key ids must be unique.")
            digest = hashlib.sha256(key).digest()
            if digest in seen:
                _config_error(f"the same key appears twice in {ENCRYPTION_KEYS_ENV} (under key id {key_id!r}).")
            seen.add(digest)
            ciphers[key_id] = AESGCM(key)
        if not ciphers:
            _config_error(f"{ENCRYPTION_KEYS_ENV} holds no key; {KEYGEN_HINT}.")
        self._ciphers = ciphers
        self._sealing_key_id = next(iter(ciphers))
        # A token is decrypted once per process, not per message.
        self._cache: LruCache[tuple[str, str], Credentials] = LruCache(cache_size)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> KeyRing:
        """The ring `QUICKBOT_ENCRYPTION_KEYS` describes (cache size: `QUICKBOT_CREDENTIALS_CACHE_SIZE`)."""
        settings = CredentialsSettings.from_env(environ)
        return cls(
            parse_encryption_keys(settings.encryption_keys.get_secret_value()),
            cache_size=settings.credentials_cache_size,
        )

    def __repr__(self) -> str:
        return f"KeyRing(key_ids={list(self._ciphers)!r}, sealing_key_id={self._sealing_key_id!r})"

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    @property
    def sealing_key_id(self) -> str:
        return self._sealing_key_id

    def seal(self, values: Mapping[str, object] | Credentials, workspace_id: str) -> str:
        """Validate the credentials form's values and encrypt them for this workspace only."""
        workspace = _checked_workspace(workspace_id)
        credentials = Credentials.from_form(values)
        key_id = self._sealing_key_id
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[key_id].encrypt(nonce, _plaintext_of(credentials), _associated_data(key_id, workspace))
        known_secrets.add(credentials.write_key.reveal())
        log.debug(
            "sealed Segment credentials",
            extra={
                "key_id": key_id,
                "workspace_id": workspace,
                "write_key": credentials.write_key.fingerprint,
            },
        )
        return f"{TOKEN_PREFIX}.{TOKEN_VERSION}.{key_id}.{_b64url(nonce + sealed)}"

    def open(self, token: str, workspace_id: str) -> Credentials:
        """The credentials in `token`, decrypted once per process (bounded cache)."""
        workspace = _checked_workspace(workspace_id)
        cache_key = (token, workspace)
        found = self._cache.get(cache_key) if isinstance(token, str) else None
        if found is not None:
            return found
        credentials = self.open_uncached(token, workspace)
        self._cache.put(cache_key, credentials)
        return credentials

    def open_uncached(self, token: str, workspace_id: str) -> Credentials:
        """Decrypt and validate `token`; every failure is a `CredentialsError` on field `credentials`."""
        workspace = _checked_workspace(workspace_id)
        key_id, nonce, sealed = _parse_token(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            _fail(
                f"{CORRUPTED}: it was sealed with key id {key_id!r}, which is missing from "
                f"{ENCRYPTION_KEYS_ENV} (it has {', '.join(self._ciphers)}). Put that key back in "
                f"{ENCRYPTION_KEYS_ENV} after the first one, or save the write key again.",
                "credentials",
            )
        plaintext: bytes | None = None
        try:
            plaintext = cipher.decrypt(nonce, sealed, _associated_data(key_id, workspace))
        except InvalidTag:
            plaintext = None
        if plaintext is None:
            _fail(
                f"{CORRUPTED} (key id {key_id!r}), or were sealed for another workspace than "
                f"{_quoted_workspace(workspace)}: save the write key again in this workspace.",
                "credentials",
            )
        credentials = _credentials_from_plaintext(plaintext)
        known_secrets.add(credentials.write_key.reveal())
        log.debug(
            "opened Segment credentials",
            extra={
                "key_id": key_id,
                "workspace_id": workspace,
                "write_key": credentials.write_key.fingerprint,
            },
        )
        return credentials

    def reseal(self, token: str, workspace_id: str) -> str:
        """Open `token` with whichever key sealed it and seal it again with the first key."""
        return self.seal(self.open_uncached(token, workspace_id), workspace_id)

    def key_id(self, token: str) -> str:
        """The id of the key that sealed `token` (whether or not this ring holds it)."""
        return _parse_token(token)[0]

    def clear_cache(self) -> None:
        self._cache.clear()

    @property
    def cached(self) -> int:
        """How many opened credentials the cache holds."""
        return len(self._cache)


def _credentials_from_plaintext(plaintext: bytes) -> Credentials:
    """Parse decrypted bytes without letting a parser error (which holds the text) chain onwards."""
    document: object = None
    try:
        document = json.loads(plaintext)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        _fail(f"{CORRUPTED}: the decrypted content is not a credentials object.", "credentials")
    problem: str | None = None
    try:
        return Credentials.model_validate(document)
    except CredentialsError as error:
        problem = error.message
    _fail(
        f"{CORRUPTED}: the sealed credentials are no longer valid ({problem}); save them again.",
        "credentials",
    )


_shared_lock = threading.Lock()
_shared: tuple[bytes, KeyRing] | None = None


def shared_keyring(environ: Mapping[str, str] | None = None) -> KeyRing:
    """The process's key ring, rebuilt only when the environment variables change.

    Building a ring per conversation would also throw away its cache of opened tokens; this
    keeps one ring (and so one cache) per process while still following a changed setting.
    """
    global _shared
    env = os.environ if environ is None else environ
    # A digest, so the module does not keep its own copy of the key material.
    settings = hashlib.sha256(
        "\x00".join((env.get(ENCRYPTION_KEYS_ENV, ""), env.get(CACHE_SIZE_ENV, ""))).encode("utf-8", "surrogatepass")
    ).digest()
    with _shared_lock:
        if _shared is not None and _shared[0] == settings:
            return _shared[1]
        ring = KeyRing.from_env(env)
        _shared = (settings, ring)
        return ring
