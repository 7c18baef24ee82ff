"""Settings: embedded defaults, environment and YAML sources, validated overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pipelines.core.settings import Settings, load_settings


def test_defaults_are_the_embedded_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NIGHTFEED_CONFIG", "NIGHTFEED_DATA_DIR", "NIGHTFEED_WAREHOUSE", "NIGHTFEED_LAKE"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.warehouse == "duckdb"
    assert settings.duckdb_file == settings.data_dir / "warehouse.duckdb"
    assert settings.lake_url == str(settings.data_dir / "lake")


def test_environment_overrides_nested_fields(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NIGHTFEED_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("NIGHTFEED_CANDIDATES__TOP_K", "7")
    settings = load_settings()
    assert settings.candidates.top_k == 7
    assert settings.lake_url == str(tmp_path / "lake")


def test_yaml_file_is_read_and_env_wins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "nightfeed.yaml"
    config.write_text("candidates:\n  top_k: 20\n  num_shards: 3\nlake: gs://bucket/prefix\n")
    monkeypatch.setenv("NIGHTFEED_CONFIG", str(config))
    monkeypatch.setenv("NIGHTFEED_CANDIDATES__NUM_SHARDS", "5")
    settings = load_settings()
    assert (settings.candidates.top_k, settings.candidates.num_shards) == (20, 5)
    assert settings.lake_url == "gs://bucket/prefix"


def test_missing_config_file_is_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NIGHTFEED_CONFIG", str(tmp_path / "nope.yaml"))
    with pytest.raises(FileNotFoundError, match=r"nope\.yaml"):
        load_settings()


def test_overrides_are_validated(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.with_overrides({"candidates": {"top_k": 5}}).candidates.top_k == 5
    assert settings.candidates.top_k == 100  # the original is untouched
    with pytest.raises(ValidationError, match="num_shards"):
        settings.with_overrides({"candidates": {"num_shards": 0}})
    with pytest.raises(ValidationError, match="no_such_field"):
        settings.with_overrides({"candidates": {"no_such_field": 1}})


def test_overriding_data_dir_moves_the_derived_paths(tmp_path: Path) -> None:
    moved = Settings(data_dir=tmp_path / "a").with_overrides({"data_dir": str(tmp_path / "b")})
    assert moved.duckdb_file == tmp_path / "b" / "warehouse.duckdb"


def test_bigquery_needs_a_project() -> None:
    with pytest.raises(ValidationError, match="bigquery_project"):
        Settings(warehouse="bigquery")


@pytest.mark.parametrize(
    ("selection", "message"),
    [
        ({"retrievers": ["two_tower", "bpr"]}, "selection.retrievers must be"),
        ({"rankers": []}, "selection.rankers must be"),
        ({"two_tower_search": {"learning_rat": [0.1]}}, "unknown settings \\['learning_rat'\\]"),
        ({"two_tower_search": {"epochs": []}}, "an empty list"),
        ({"two_tower_search": {"epochs": [0]}}, "epochs"),
        ({"metric": "recall_at_20"}, "not among"),
        ({"diversify_choices": []}, "at least one choice"),
        ({"als_regularizations": [10.0, 0.0]}, "als_regularizations must be positive"),
        ({"als_regularizations": []}, "als_regularizations"),
    ],
)
def test_selection_settings_name_what_is_wrong(selection: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(selection=selection)


def test_the_selection_searches_two_tower_settings_from_the_configured_values() -> None:
    search = Settings().selection.two_tower_search
    defaults = Settings().two_tower
    # Each search starts at the configured value, so a tie keeps it.
    assert all(values[0] == getattr(defaults, name) for name, values in search.items())
