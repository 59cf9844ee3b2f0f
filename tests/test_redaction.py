"""Known write keys are scrubbed from any text, however many keys the process has opened.

Past a few dozen keys, `scrub` finds them by prefix instead of testing each (redaction.py);
these properties hold on both sides of that switch.
"""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.core.redaction import FEW_SECRETS, _KnownSecrets, fingerprint

KEY_CHARS = string.ascii_letters + string.digits + "_-.:+/="
keys = st.text(alphabet=KEY_CHARS, min_size=8, max_size=48)
fillers = st.text(alphabet=string.printable, max_size=12)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(keys, min_size=1, max_size=120, unique=True),
    st.data(),
)
def test_every_known_key_quoted_in_a_text_is_replaced_by_its_fingerprint(
    secrets: list[str], data: st.DataObject
) -> None:
    known = _KnownSecrets()
    for secret in secrets:
        known.add(secret)
    quoted = data.draw(st.lists(st.sampled_from(secrets), min_size=1, max_size=4))
    text = "".join(data.draw(fillers) + secret + data.draw(fillers) for secret in quoted)
    scrubbed = known.scrub(text)
    for secret in secrets:
        assert secret not in scrubbed
    longest = max(quoted, key=len)
    if not any(longest in other and longest != other for other in secrets):
        assert f"[{fingerprint(longest)}]" in scrubbed


@pytest.mark.parametrize("count", [1, FEW_SECRETS, FEW_SECRETS + 1, 5_000])
def test_keys_inside_longer_tokens_and_keys_with_spaces_are_scrubbed_at_any_count(count: int) -> None:
    known = _KnownSecrets()
    for index in range(count - 1):
        known.add(f"filler-key-{index:06d}")
    known.add("odd key with spaces")  # no Segment key has one, but the pool accepts any string
    target = "LiveKey0123456789abcdef"
    known.add(target)
    text = f"url=https://x/?k=xx{target}yy and 'odd key with spaces' and filler-key-000000"
    scrubbed = known.scrub(text)
    assert target not in scrubbed and "odd key with spaces" not in scrubbed
    assert f"[{fingerprint(target)}]" in scrubbed
    assert ("filler-key-000000" in scrubbed) == (count == 1)  # once it is known, a filler is scrubbed too


def test_a_text_without_any_key_comes_back_unchanged_and_short_strings_are_never_secrets() -> None:
    known = _KnownSecrets()
    for index in range(FEW_SECRETS * 3):
        known.add(f"secret-{index:08d}")
    known.add("short")
    text = "Trait 'address.city' had spaces around its value; short words stay."
    assert known.scrub(text) == text


def test_a_discarded_key_is_no_longer_scrubbed() -> None:
    known = _KnownSecrets()
    for index in range(FEW_SECRETS * 2):
        known.add(f"secret-{index:08d}")
    known.discard("secret-00000001")
    assert (
        known.scrub("a secret-00000001 b secret-00000002") == f"a secret-00000001 b [{fingerprint('secret-00000002')}]"
    )


@pytest.mark.parametrize("count", [1, FEW_SECRETS + 1])
def test_a_shortest_key_at_the_very_end_or_start_of_the_text_is_scrubbed(count: int) -> None:
    known = _KnownSecrets()
    for index in range(count):
        known.add(f"k{index:07d}")  # eight characters: the shortest secret
    first, last = "k0000000", f"k{count - 1:07d}"
    assert known.scrub(f"{first} ... {last}") == f"[{fingerprint(first)}] ... [{fingerprint(last)}]"
