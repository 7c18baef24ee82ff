"""Typed settings for Nightfeed: one object, read from a YAML file and ``NIGHTFEED_*`` variables.

Precedence (highest first): per-run overrides (DAG params, CLI flags) > environment variables
(``NIGHTFEED_WAREHOUSE=bigquery``, nested with ``__``: ``NIGHTFEED_CANDIDATES__TOP_K=50``) > the YAML
file named by ``NIGHTFEED_CONFIG`` > defaults. The defaults are the embedded mode: DuckDB in the repo's
``data/`` folder and a local folder as the lake, so a new user needs no cloud account.

Nothing here touches the environment or the disk at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from pipelines.core.errors import UserError
from pipelines.core.model_settings import RankerConfig, SelectionConfig, TwoTowerConfig
from pipelines.core.section import Section

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "data"


class SettingsFileError(UserError, FileNotFoundError):
    """The settings file named by ``NIGHTFEED_CONFIG`` is missing or not valid YAML."""


WorldRegime = Literal["default", "popularity", "collaborative", "content", "freshness", "ratings"]


class WorldConfig(Section):
    """Size and shape of the synthetic developer-news world."""

    n_users: int = Field(1500, ge=10)
    n_items: int = Field(2500, ge=10)
    n_days: int = Field(35, ge=3, description="days of event history ending at the run date")
    n_topics: int = Field(12, ge=2)
    impressions_per_active_user_day: int = Field(12, ge=1)
    daily_active_fraction: float = Field(0.35, gt=0, le=1)
    bad_row_fraction: float = Field(0.002, ge=0, lt=1, description="share of raw rows made malformed")
    seed: int = 7
    regime: WorldRegime = Field(
        "default",
        description="which signal drives engagement: topic match and freshness (default), global "
        "popularity, latent communities, content of new posts, freshness, or a ratings log without a feed",
    )


class QualityConfig(Section):
    """Data-quality rules: the bad-row threshold and the plausible range of timestamps (``out_of_range``)."""

    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="fail the run when more than this share of a day's raw rows is bad"
    )
    max_future_skew_minutes: int = Field(
        10, ge=0, description="time allowed past the end of ds (quality gate) or past now (import)"
    )
    max_past_years: int = Field(
        50,
        ge=1,
        description="a timestamp more than this many years before now (import) or before ds (quality gate) "
        "is out_of_range",
    )
    max_gap_days: int = Field(
        365,
        ge=1,
        description="event days cut off from the bulk of the events by more than this many days without "
        "events are out_of_range (import) and not built by a history build",
    )


class FeaturesConfig(Section):
    lookback_days: int = Field(
        30, ge=2, description="days of events behind history and the *_lookback columns"
    )
    short_window_days: int = Field(7, ge=1, description="days behind the *_short columns")
    history_days: int = Field(
        365, ge=1, description="days of engagements a user's history (the user tower's input) looks back"
    )
    affinity_tags: int = Field(10, ge=1, description="top tags kept per user")


class IndexConfig(Section):
    num_neighbors: int = Field(500, ge=1)
    min_recall: float = Field(0.95, ge=0, le=1)
    recall_k: int = Field(100, ge=1)
    recall_sample_queries: int = Field(1000, ge=10)
    brute_force_below: int = Field(
        20000, ge=0, description="catalogs smaller than this use exact ScaNN brute force"
    )
    leaves_per_sqrt_items: float = Field(1.5, gt=0, description="num_leaves = this * sqrt(n)")
    leaves_to_search_fraction: float = Field(0.1, gt=0, le=1)
    reorder_multiplier: int = Field(
        8, ge=0, description="exact re-scoring of multiplier * k approximate hits; 0 = no reordering"
    )
    seed: int = Field(13, description="picks the sample of user queries for the recall check")


class CandidatesConfig(Section):
    num_shards: int = Field(4, ge=1, le=4096)
    top_n: int = Field(500, ge=1, description="retrieved per user before filtering")
    top_k: int = Field(100, ge=1, description="published per user")
    max_item_age_days: int | None = Field(
        None,
        ge=1,
        description="a cap on the age of the posts exported each night (None: every live post); the served "
        "system may list only fresher ones",
    )
    seen_horizon_days: int | None = Field(
        None, ge=1, description="posts seen within this many days are never listed again; None: ever seen"
    )
    user_batch_size: int = Field(2048, ge=1)
    warehouse_table: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="also load each published night into this warehouse table, partitioned by ds "
        "(a rerun replaces the partition); None: the lake only",
    )


class DiversifyConfig(Section):
    mmr_lambda: float = Field(0.8, ge=0, le=1, description="1 = pure relevance, 0 = pure novelty")
    mmr_depth: int = Field(50, ge=1, description="slots filled by MMR; the rest keep ranker order")
    max_per_source_top: int = Field(2, ge=1)
    max_per_author_top: int = Field(1, ge=1)
    cap_window: int = Field(5, ge=1, description="the caps apply within the first this-many slots")
    exploration_slot: int | None = Field(
        8, ge=1, description="1-based slot given to a fresh under-exposed item; None disables"
    )
    seed: int = 11


LOCAL_UNSUBSCRIBE_SECRET = "local-only-unsubscribe-secret-not-for-production"
_KEY_ID_PATTERN = r"^[A-Za-z0-9_-]{1,16}$"


class DigestConfig(Section):
    """Digest e-mails: who gets one, what it holds, and the links in it (see ``pipelines/delivery/digests``).

    Unsubscribe tokens name the key that signed them: to rotate, move the current key into
    ``unsubscribe_previous_keys`` under its id and set a new ``unsubscribe_secret`` and
    ``unsubscribe_key_id``; new links use the new key while links already sent keep working.
    """

    items_per_digest: int = Field(8, ge=1)
    min_fresh_candidates: int = Field(3, ge=1)
    sender: str = "Nightfeed <digest@nightfeed.example>"
    base_url: str = "https://nightfeed.example"
    unsubscribe_url: str = "https://nightfeed.example/unsubscribe"
    send_hour_local: int = Field(7, ge=0, le=23)
    summary_chars: int = Field(240, ge=20, description="summary excerpt length, cut at a word boundary")
    previous_digest_days: int = Field(
        30, ge=0, description="items sent in the digests of this many earlier run dates are not repeated"
    )
    unsubscribe_secret: str = Field(
        LOCAL_UNSUBSCRIBE_SECRET,
        min_length=16,
        description="HMAC key that signs new unsubscribe tokens; production refuses the built-in one: set "
        "NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET (e.g. to `openssl rand -hex 32`)",
    )
    unsubscribe_key_id: str = Field(
        "k1", pattern=_KEY_ID_PATTERN, description="id of unsubscribe_secret, written into every token"
    )
    unsubscribe_previous_keys: dict[str, str] = Field(
        default_factory=dict,
        description="earlier keys by id, still accepted when verifying (a rotation's grace period: keep one "
        "until unsubscribe_token_days after the last digest signed with it)",
    )
    unsubscribe_token_days: int = Field(
        90, ge=30, description="an unsubscribe token expires this many days after its run date"
    )
    _production: bool = PrivateAttr(False)

    @field_validator("unsubscribe_previous_keys", mode="before")
    @classmethod
    def _no_previous_keys(cls, value: Any) -> Any:
        return {} if value == "" else value  # an empty environment variable (docker compose's default)

    @model_validator(mode="after")
    def _check_keys(self) -> DigestConfig:
        for key_id, secret in self.unsubscribe_previous_keys.items():
            if not re.fullmatch(_KEY_ID_PATTERN, key_id):
                raise ValueError(f"digest.unsubscribe_previous_keys: bad key id {key_id!r}")
            if len(secret) < 16:
                raise ValueError(
                    f"digest.unsubscribe_previous_keys[{key_id!r}] must have at least 16 characters"
                )
        if self.unsubscribe_key_id in self.unsubscribe_previous_keys:
            raise ValueError(
                f"digest.unsubscribe_key_id {self.unsubscribe_key_id!r} is also a previous key's id"
            )
        return self

    @property
    def production(self) -> bool:
        """True when these settings run in production mode (set by :class:`Settings`)."""
        return self._production

    def verification_keys(self) -> dict[str, str]:
        """Every key an unsubscribe token may be signed with, by key id (the current one first)."""
        return {self.unsubscribe_key_id: self.unsubscribe_secret, **self.unsubscribe_previous_keys}


class AlertsConfig(Section):
    """Who hears of a failed task or DAG run: e-mail through an SMTP connection, Slack optionally."""

    email_to: list[str] = Field(
        default_factory=list, description="addresses alerted of failures; empty: no e-mail alerts"
    )
    email_from: str = "Nightfeed alerts <alerts@nightfeed.example>"
    smtp_conn_id: str = Field(
        "smtp_default", description="the Airflow connection of the SMTP server (host, port, login, TLS)"
    )
    slack_conn_id: str | None = Field(
        None, description="an Airflow Slack API connection to alert too (needs the Slack provider)"
    )
    slack_channel: str = "#nightfeed-alerts"


class FreshnessConfig(Section):
    """How old the newest published outputs may be before the freshness check fails."""

    max_age_days: int = Field(
        1, ge=0, description="the newest published candidates and digests may be this many days before ds"
    )


class Settings(BaseSettings):
    """All of Nightfeed's configuration. Defaults give the embedded single-machine setup."""

    model_config = SettingsConfigDict(
        env_prefix="NIGHTFEED_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    data_dir: Path = DEFAULT_DATA_DIR
    warehouse: Literal["duckdb", "bigquery"] = "duckdb"
    duckdb_path: Path | None = Field(None, description="defaults to <data_dir>/warehouse.duckdb")
    bigquery_project: str | None = None
    bigquery_dataset: str = "nightfeed"
    bigquery_location: str = "US"
    bigquery_api_endpoint: str | None = Field(None, description="set only to use an emulator")
    lake: str | None = Field(None, description="fsspec URL; gs://bucket/prefix in production")
    dry_run_users: int | None = Field(
        None, ge=1, description="compute for a seeded sample of this many users and publish nothing"
    )
    night_lease_minutes: int = Field(
        60,
        ge=1,
        description="how long a night's lease lasts without renewal (every nightly task renews it); a run "
        "that died frees its night after this long",
    )
    force_retrain: bool = Field(
        False, description="train even when the champion was trained on data up to the same date"
    )
    use_current_system: bool = Field(
        False,
        description="serve the current system champion, not the system in force on the run date "
        "(the latest promotion trained on data up to it)",
    )

    world: WorldConfig = Field(default_factory=WorldConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    two_tower: TwoTowerConfig = Field(default_factory=TwoTowerConfig)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    index: IndexConfig = Field(default_factory=IndexConfig)
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    ranker: RankerConfig = Field(default_factory=RankerConfig)
    diversify: DiversifyConfig = Field(default_factory=DiversifyConfig)
    digest: DigestConfig = Field(default_factory=DigestConfig)
    alerts: AlertsConfig = Field(default_factory=AlertsConfig)
    freshness: FreshnessConfig = Field(default_factory=FreshnessConfig)

    @model_validator(mode="after")
    def _check_backends(self) -> Settings:
        if self.warehouse == "bigquery" and not self.bigquery_project:
            raise ValueError("warehouse=bigquery needs bigquery_project (NIGHTFEED_BIGQUERY_PROJECT)")
        self.digest._production = self.production
        return self

    @property
    def production(self) -> bool:
        """Production mode: the BigQuery warehouse or a ``gs://`` lake (built-in secrets are refused)."""
        return self.warehouse == "bigquery" or self.lake_url.startswith("gs://")

    @property
    def duckdb_file(self) -> Path:
        return self.duckdb_path or self.data_dir / "warehouse.duckdb"

    @property
    def lake_url(self) -> str:
        return self.lake or str(self.data_dir / "lake")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        config_file = os.environ.get("NIGHTFEED_CONFIG")
        if config_file:
            if not Path(config_file).is_file():
                raise SettingsFileError(
                    f"NIGHTFEED_CONFIG={config_file!r} is not a file",
                    hint="point NIGHTFEED_CONFIG at a YAML settings file, or unset it",
                )
            try:
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            except yaml.YAMLError as exc:
                detail = " ".join(str(exc).split())
                raise SettingsFileError(
                    f"NIGHTFEED_CONFIG={config_file!r} is not valid YAML: {detail}"
                ) from exc
        return tuple(sources)

    def with_overrides(self, overrides: dict[str, Any] | None) -> Settings:
        """Return a validated copy with ``overrides`` (nested dicts) merged over these settings.

        Raises:
            pydantic.ValidationError: an override names an unknown field or has a bad value.
        """
        if not overrides:
            return self
        merged = _deep_merge(self.model_dump(), overrides)
        return Settings.model_validate(merged)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_settings(**overrides: Any) -> Settings:
    """Read settings from defaults, the YAML file and the environment, then apply ``overrides``.

    Raises:
        SettingsFileError: ``NIGHTFEED_CONFIG`` names a missing file or one that is not valid YAML.
        pydantic.ValidationError: a value is unknown or out of range.
    """
    return Settings().with_overrides(overrides or None)
