"""Privacy by default, end to end: execute -> the real library -> real HTTP -> the embedded
collector. Every value that must not leave the bot is a canary: it is looked for in the
result, the server log and everything the collector stored."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from support import WORKSPACE

from quickbot_segment_plugin.block import SegmentBlock
from quickbot_segment_plugin.collector.service import Collector
from quickbot_segment_plugin.privacy.policy import PolicyResolver

CARD = "4111 1111 1111 1111"
IBAN = "DE89 3704 0044 0532 0130 00"
SSN = "219-09-9999"
PHONE = "+33 6 12 34 56 78"
HASH_SECRET = "operator-secret-for-tests-0123456789abcdef"

# detector -> (text an end user typed, what `mask` sends)
TYPED = {
    "card": (f"my card is {CARD} thanks", "my card is **** **** **** 1111 thanks"),
    "iban": (f"refund to {IBAN} please", "refund to **** **** **** **** **30 00 please"),
    "ssn": (f"ssn {SSN} ok", "ssn ***-**-9999 ok"),
    "phone": (f"call {PHONE} tonight", "call +** * ** ** 56 78 tonight"),
}
TITLES = {
    "card": "a payment card number",
    "iban": "an IBAN",
    "ssn": "a US Social Security number",
    "phone": "a phone number",
}


def use_policy(directory: Path, monkeypatch: pytest.MonkeyPatch, policy: dict[str, Any]) -> Path:
    directory.mkdir(exist_ok=True)
    path = directory / f"{WORKSPACE}.privacy.json"
    path.write_text(json.dumps(policy), encoding="utf-8")
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY_DIR", str(directory))
    return path


def track(properties: dict[str, str], user: str = "user-1", **extra: Any) -> dict[str, Any]:
    return {
        "action": "track",
        "event": "Support Message",
        "userId": user,
        "properties": [{"key": key, "value": value} for key, value in properties.items()],
        **extra,
    }


def run(block: SegmentBlock, options: dict[str, Any], token: str | None, variables: Any = None, **context: Any) -> Any:
    result = block.execute(
        options, {"workspace_id": WORKSPACE, "credentials": token, "variables": variables or {}, **context}
    )
    json.dumps(result)
    return result


def received(block: SegmentBlock, collector: Collector, count: int) -> list[dict[str, Any]]:
    block.shutdown(10.0)
    assert collector.wait_for(count, timeout=10.0)
    return collector.messages()


def marker(block: SegmentBlock, token: str) -> None:
    """An event sent after the one under test: once it arrives, anything before it would have too."""
    assert run(block, {"action": "track", "event": "Marker", "userId": "m"}, token)["status"] == "queued"


def assert_nowhere(canary: str, *places: Any) -> None:
    for place in places:
        text = place if isinstance(place, str) else json.dumps(place)
        assert canary not in text
        assert canary.replace(" ", "") not in text.replace(" ", "")


# --- detectors x actions, through the delivery path ------------------------------------------


@pytest.mark.parametrize("action", ["mask", "drop", "refuse"])
@pytest.mark.parametrize("detector", sorted(TYPED))
def test_each_detector_and_action_end_to_end(
    block: SegmentBlock,
    token: str,
    local_segment: Collector,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    detector: str,
    action: str,
) -> None:
    use_policy(tmp_path / "policies", monkeypatch, {"detectors": {detector: action}})
    typed, masked = TYPED[detector]
    caplog.set_level(logging.DEBUG)
    result = run(block, track({"note": "{{Note}}", "plan": "pro"}), token, {"Note": typed})
    marker(block, token)
    stored = received(block, local_segment, 1 if action == "refuse" else 2)
    canary = {"card": CARD, "iban": IBAN, "ssn": SSN, "phone": PHONE}[detector]
    assert_nowhere(canary, result, caplog.text, stored)
    if action == "refuse":
        assert result["status"] == "failed"
        assert "payload" not in result
        [error] = [entry for entry in result["logs"] if entry["level"] == "error"]
        assert error["details"] == {"field": "properties.note", "rule": f"privacy_{detector}", "action": "refused"}
        assert "properties.note" in error["message"] and TITLES[detector] in error["message"]
        assert [message["event"] for message in stored] == ["Marker"]
        return
    assert result["status"] == "queued"
    expected = {"note": masked, "plan": "pro"} if action == "mask" else {"plan": "pro"}
    [event] = [message for message in stored if message["event"] == "Support Message"]
    assert event["properties"] == expected
    assert result["payload"]["properties"] == expected
    [entry] = [entry for entry in result["logs"] if entry["details"].get("rule", "").startswith("privacy_")]
    assert entry["details"] == {
        "field": "properties.note",
        "rule": f"privacy_{detector}",
        "action": "masked" if action == "mask" else "dropped",
    }
    assert "properties.note" in caplog.text  # the server log names the field, not the value


def test_default_policy_masks_a_card_typed_in_free_text_and_drops_denied_keys(
    block: SegmentBlock, token: str, local_segment: Collector, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    options = {
        "action": "identify",
        "userId": "user-1",
        "email": "zoe@example.com",
        "traits": [
            {"key": "password", "value": "hunter2-canary"},
            {"key": "Credit Card Number", "value": "{{Card}}"},
            {"key": "payment.cvv", "value": "123"},
            {"key": "comment", "value": "{{Comment}}"},
            {"key": "card_as_number", "value": "{{Card number}}"},
            {"key": "order", "value": "order 4111111111111112 shipped"},
        ],
    }
    variables = {"Card": CARD, "Comment": f"pay with {CARD} or {IBAN}", "Card number": 4111111111111111}
    result = run(block, options, token, variables)
    [stored] = received(block, local_segment, 1)
    assert result["status"] == "queued"
    assert stored["traits"] == {
        "comment": "pay with **** **** **** 1111 or **** **** **** **** **30 00",
        "card_as_number": "************1111",
        "order": "order 4111111111111112 shipped",  # not Luhn-valid: not a card, left alone
        "email": "zoe@example.com",
    }
    for canary in ("hunter2-canary", CARD, "4111111111111111", IBAN):
        assert_nowhere(canary, result, caplog.text, stored)
    actions = sorted(
        (entry["details"]["field"], entry["details"]["action"])
        for entry in result["logs"]
        if "action" in entry["details"]
    )
    assert actions == [
        ("traits.Credit Card Number", "dropped"),
        ("traits.card_as_number", "masked"),
        ("traits.comment", "masked"),
        ("traits.comment", "masked"),
        ("traits.password", "dropped"),
        ("traits.payment.cvv", "dropped"),
    ]


def test_dry_runs_are_screened_too_and_the_policy_can_be_turned_off(
    block: SegmentBlock, monkeypatch: pytest.MonkeyPatch
) -> None:
    options = track({"note": "{{Note}}", "pin": "1234"})
    result = run(block, options, None, {"Note": f"card {CARD}"}, dry_run=True)
    assert result["status"] == "dry_run"
    assert result["payload"]["properties"] == {"note": "card **** **** **** 1111"}
    monkeypatch.setenv("QUICKBOT_SEGMENT_PRIVACY", "off")
    unscreened = SegmentBlock()
    try:
        result = run(unscreened, options, None, {"Note": f"card {CARD}"}, dry_run=True)
    finally:
        unscreened.shutdown(5.0)
    assert result["payload"]["properties"] == {"note": f"card {CARD}", "pin": "1234"}


def test_policy_file_deny_paths_and_keep_keys(
    block: SegmentBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_policy(
        tmp_path / "policies",
        monkeypatch,
        {"deny_keys": ["traits.address.street", "birthday"], "keep_keys": ["pin"]},
    )
    options = {
        "action": "identify",
        "userId": "u",
        "email": "a@example.com",
        "traits": [
            {"key": "address.street", "value": "1 Main St"},
            {"key": "address.city", "value": "Lyon"},
            {"key": "Birthday", "value": "1990-01-01"},
            {"key": "pin", "value": "kept"},
        ],
    }
    result = run(block, options, None, dry_run=True)
    assert result["payload"]["traits"] == {"address": {"city": "Lyon"}, "pin": "kept", "email": "a@example.com"}


def test_an_unusable_policy_file_refuses_events_until_fixed_then_keeps_the_last_good_one(
    block: SegmentBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = use_policy(tmp_path / "policies", monkeypatch, {"detectors": {"card": "explode"}})
    result = run(block, track({"note": "hello"}), None, dry_run=True)
    assert result["status"] == "failed"
    [error] = result["logs"]
    assert error["details"] == {"rule": "privacy_policy"}
    assert "detectors.card" in error["message"]
    path.write_text(json.dumps({"detectors": {"card": "refuse"}}), encoding="utf-8")
    assert run(block, track({"note": f"x {CARD}"}), None, dry_run=True)["status"] == "failed"
    path.write_text("{not json", encoding="utf-8")
    result = run(block, track({"note": f"x {CARD}"}), None, dry_run=True)
    assert result["status"] == "failed"  # the last good version (refuse cards) still applies
    assert any("previous version is still applied" in entry["message"] for entry in result["logs"])


# --- hashing ----------------------------------------------------------------------------------


def workspace_key(workspace: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=b"quickbot-segment-privacy-v1",
        info=b"workspace:" + workspace.encode(),
    ).derive(HASH_SECRET.encode())


def test_hashing_sends_sha256_of_the_normalised_email_and_a_keyed_hash_per_workspace(
    block: SegmentBlock, token: str, local_segment: Collector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_policy(
        tmp_path / "policies",
        monkeypatch,
        {
            "hash": [
                {"path": "traits.email", "method": "sha256"},
                {"path": "traits.phone", "method": "hmac-sha256"},
            ]
        },
    )
    monkeypatch.setenv("QUICKBOT_SEGMENT_HASH_KEY", HASH_SECRET)
    options = {
        "action": "identify",
        "userId": "u",
        "email": "{{Email}}",
        "traits": [{"key": "phone", "value": "+33 6 12 34 56 78"}],
    }
    result = run(block, options, token, {"Email": "  Zoe.Martin@Example.COM "})
    [stored] = received(block, local_segment, 1)
    assert result["status"] == "queued"
    assert stored["traits"]["email"] == hashlib.sha256(b"zoe.martin@example.com").hexdigest()
    expected_phone = hmac.new(workspace_key(WORKSPACE), b"33612345678", hashlib.sha256).hexdigest()
    assert stored["traits"]["phone"] == expected_phone
    assert expected_phone != hmac.new(workspace_key("other"), b"33612345678", hashlib.sha256).hexdigest()
    hashed = sorted(entry["details"]["field"] for entry in result["logs"] if entry["details"].get("action") == "hashed")
    assert hashed == ["traits.email", "traits.phone"]
    assert_nowhere("Zoe.Martin", result, stored)
    assert_nowhere("34 56 78", result, stored)


def test_a_keyed_hash_without_the_operator_secret_fails_naming_the_variable(
    block: SegmentBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_policy(tmp_path / "policies", monkeypatch, {"hash": [{"path": "properties.phone", "method": "hmac-sha256"}]})
    result = run(block, track({"phone": "+33 6 12 34 56 78"}), None, dry_run=True)
    assert result["status"] == "failed"
    assert result["logs"][-1]["details"] == {"field": "QUICKBOT_SEGMENT_HASH_KEY"}
    assert_nowhere("12 34 56", result)


# --- consent ----------------------------------------------------------------------------------

CONSENTED = {"consent": "{{Consent}}", "consentCategories": "Analytics"}


@pytest.mark.parametrize(
    ("consent", "preferences"),
    [
        ({"Analytics": True, "Advertising": False}, {"Analytics": True, "Advertising": False}),
        ({"categoryPreferences": {"analytics": "yes"}}, {"analytics": True}),
        ("Analytics, Functional", {"Analytics": True, "Functional": True}),
        (["Analytics"], {"Analytics": True}),
        ("yes", {"Analytics": True}),
    ],
    ids=["object", "categoryPreferences", "text", "list", "yes"],
)
def test_consent_granted_sends_the_event_with_context_consent(
    block: SegmentBlock, token: str, local_segment: Collector, consent: Any, preferences: dict[str, bool]
) -> None:
    result = run(block, track({"plan": "pro"}, **CONSENTED), token, {"Consent": consent})
    [stored] = received(block, local_segment, 1)
    assert result["status"] == "queued"
    assert stored["context"]["consent"] == {"categoryPreferences": preferences}


@pytest.mark.parametrize(
    ("consent", "kind"),
    [
        ({"Analytics": False, "Advertising": True}, "denied"),
        ("no", "denied"),
        ("Advertising", "denied"),
        (None, "missing"),
        ("", "missing"),
    ],
    ids=["object-false", "no", "other-category", "not-set", "empty"],
)
def test_consent_denied_or_missing_skips_the_block_and_sends_nothing(
    block: SegmentBlock, token: str, local_segment: Collector, consent: Any, kind: str
) -> None:
    variables = {} if consent is None else {"Consent": consent}
    result = run(block, track({"plan": "pro"}, **CONSENTED), token, variables)
    marker(block, token)
    stored = received(block, local_segment, 1)
    assert result["status"] == "skipped"
    [entry] = result["logs"]
    assert entry["level"] == "info"
    assert entry["message"].startswith("Skipped:")
    assert entry["details"] == {"field": "consent", "consent": kind}
    assert [message["event"] for message in stored] == ["Marker"]


def test_no_consent_options_means_no_consent_check_and_no_context_consent(block: SegmentBlock) -> None:
    result = run(block, track({"plan": "pro"}), None, dry_run=True)
    assert result["status"] == "dry_run"
    assert "consent" not in result["payload"]["context"]


def test_consent_categories_without_a_consent_variable_is_a_save_time_error(block: SegmentBlock) -> None:
    problems = block.validate(track({}, consentCategories="Analytics"))
    assert {"path": "consent", "message": problems[0]["message"]} in problems
    assert "Consent is empty" in problems[0]["message"]
    assert block.validate(track({}, **CONSENTED)) == []


def test_screening_and_hashing_apply_one_lookup_of_the_policy_file(
    block: SegmentBlock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One stat of the file per event, and no chance of masking with one version and hashing with another."""
    use_policy(tmp_path / "policies", monkeypatch, {"hash": [{"path": "traits.email", "method": "sha256"}]})
    lookups: list[str] = []
    original = PolicyResolver.for_workspace

    def counted(self: PolicyResolver, workspace_id: str) -> Any:
        lookups.append(workspace_id)
        return original(self, workspace_id)

    monkeypatch.setattr(PolicyResolver, "for_workspace", counted)
    options = {"action": "identify", "userId": "u", "email": "{{Email}}"}
    result = run(block, options, None, {"Email": "zoe@example.com"}, dry_run=True)
    assert result["status"] == "dry_run"
    assert result["payload"]["traits"]["email"] == hashlib.sha256(b"zoe@example.com").hexdigest()
    assert lookups == [WORKSPACE]
