"""Operator settings: one model per subsystem, the same bounds from the environment and from code,
errors that name the variable, and a reference page that cannot drift from the models."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quickbot_segment_plugin.cli.settings import REFERENCE_END, REFERENCE_START, SETTINGS_MODELS, reference_markdown
from quickbot_segment_plugin.core import ConfigurationError, Settings, env_name

FIELDS = [(model, name) for model in SETTINGS_MODELS for name in model.model_fields]
NUMERIC = [(model, name) for model, name in FIELDS if model.model_fields[name].annotation in (int, float)]
REFERENCE_PAGE = Path(__file__).resolve().parent.parent / "docs" / "operators" / "settings.md"


@pytest.mark.parametrize(("model", "name"), NUMERIC, ids=[env_name(m, n) for m, n in NUMERIC])
@settings(max_examples=40, deadline=None)
@given(value=st.one_of(st.integers(-(10**12), 10**12), st.floats(allow_nan=False, allow_infinity=False)))
def test_a_value_is_accepted_from_the_environment_exactly_when_it_is_accepted_in_code(
    model: type[Settings], name: str, value: float
) -> None:
    """One set of bounds: `flush_interval` cannot be 0.001 in code and refused from the environment."""
    defaults = model.defaults()
    try:
        in_code = getattr(defaults.with_overrides(**{name: value}), name)
    except ConfigurationError as error:
        in_code = error
    try:
        from_env = getattr(model.from_env({env_name(model, name): repr(value)}), name)
    except ConfigurationError as error:
        from_env = error
    if isinstance(in_code, ConfigurationError) or isinstance(from_env, ConfigurationError):
        assert isinstance(in_code, ConfigurationError) and isinstance(from_env, ConfigurationError)
        assert from_env.field == env_name(model, name) and env_name(model, name) in str(from_env)
        assert in_code.field == name
    else:
        assert in_code == from_env


@pytest.mark.parametrize("word", ["n", "No", " off ", "0", "false"])
def test_yes_no_settings_read_the_shared_truth_table(word: str) -> None:
    flags = [(model, name) for model, name in FIELDS if model.model_fields[name].annotation is bool]
    assert flags
    for model, name in flags:
        assert getattr(model.from_env({env_name(model, name): word}), name) is False
        with pytest.raises(ConfigurationError):
            model.from_env({env_name(model, name): "maybe"})


def test_bounds_are_inclusive_so_the_reference_states_them_exactly() -> None:
    for model, name in FIELDS:
        for rule in model.model_fields[name].metadata:
            assert getattr(rule, "gt", None) is None and getattr(rule, "lt", None) is None, env_name(model, name)


def test_every_variable_is_named_once_and_described() -> None:
    names = [env_name(model, name) for model, name in FIELDS]
    assert len(names) == len(set(names))
    for model, name in FIELDS:
        assert model.model_fields[name].description, f"{env_name(model, name)} has no description"
        assert model.title, f"{model.__name__} has no title"


def test_the_command_names_a_malformed_variable_and_exits_2() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quickbot_segment_plugin.cli", "settings"],
        env={"QUICKBOT_SEGMENT_FLUSH_INTERVAL": "0.001", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "QUICKBOT_SEGMENT_FLUSH_INTERVAL='0.001'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_operator_reference_is_the_generated_one() -> None:
    page = REFERENCE_PAGE.read_text()
    start, end = page.index(REFERENCE_START), page.index(REFERENCE_END) + len(REFERENCE_END)
    assert page[start:end] + "\n" == reference_markdown(), (
        "docs/operators/settings.md is out of date: paste the output of `quickbot-segment settings --markdown`"
    )


def test_a_secret_setting_is_never_quoted_in_an_error() -> None:
    from pydantic import SecretStr

    from quickbot_segment_plugin.credentials import CredentialsSettings

    secret = "EXAMPLE-NOT-A-KEY-7f3a9c"
    with pytest.raises(ConfigurationError) as raised:
        CredentialsSettings.defaults().with_overrides(encryption_keys=SecretStr(secret), credentials_cache_size=-1)
    assert "credentials_cache_size=-1" in str(raised.value)
    with pytest.raises(ConfigurationError) as raised:
        CredentialsSettings.defaults().with_overrides(encryption_keys=12345678901234)
    assert "encryption_keys=(hidden)" in str(raised.value)
    assert "12345678901234" not in str(raised.value)
