"""Sampling settings: strict numbers, and the precedence of merged layers."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from shoal.settings import ModelSettings, cache_dir, data_dir, merge_settings


@pytest.mark.parametrize(
    "bad",
    [
        {"temperature": True},  # YAML 'yes'
        {"temperature": "0.5"},
        {"temperature": 3.0},
        {"top_p": 0.0},
        {"max_tokens": 5.0},
        {"max_tokens": 0},
        {"seed": "7"},
        {"unknown": 1},
    ],
)
def test_bad_settings_are_rejected(bad: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        ModelSettings(**bad)


def test_ints_are_accepted_for_floats() -> None:
    assert ModelSettings(temperature=0, top_p=1).temperature == 0.0


def test_later_layers_win_field_by_field_and_stops_join() -> None:
    profile = ModelSettings(temperature=0.7, top_k=20, max_tokens=512, stop=("<|im_end|>",))
    agent = ModelSettings(temperature=0.0, stop=("END",))
    request = ModelSettings(max_tokens=64, stop=("END",))
    merged = merge_settings(profile, None, agent, request)
    assert merged.temperature == 0.0
    assert merged.top_k == 20
    assert merged.max_tokens == 64
    assert merged.stop == ("<|im_end|>", "END")


def test_directories_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.setenv("SHOAL_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("SHOAL_CACHE_DIR", str(tmp_path / "cache"))
    assert data_dir() == tmp_path / "home"
    assert cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("SHOAL_HOME")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert data_dir() == tmp_path / "xdg" / "shoal"
