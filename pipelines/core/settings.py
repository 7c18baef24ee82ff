"""Typed settings for Nightfeed: one object, read from a YAML file and ``NIGHTFEED_*`` variables.

Precedence (highest first): per-run overrides (DAG params, CLI flags) > environment variables
(``NIGHTFEED_WAREHOUSE=bigquery``, nested with ``__``: ``NIGHTFEED_CANDIDATES__TOP_K=50``) > the YAML
file named by ``NIGHTFEED_CONFIG`` > defaults. The defaults are the embedded mode: DuckDB in the repo's
``data/`` folder and a local folder as the lake, so a new user needs no cloud account.

Nothing here touches the environment or the disk at import time; call :func:`load_settings`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_DATA_DIR = REPO_ROOT / "data"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


TWO_TOWER_RETRIEVER = "two_tower"
ALS_RETRIEVER = "als"
KNN_RETRIEVER = "item_knn"
POPULAR_RETRIEVER = "most_popular"
RETRIEVERS: tuple[str, ...] = (TWO_TOWER_RETRIEVER, ALS_RETRIEVER, KNN_RETRIEVER, POPULAR_RETRIEVER)
"""The ways the nightly lists can be retrieved (``pipelines.serving.retrievers``)."""

NO_RANKER = "none"
IMPRESSIONS_RANKER = "impressions"
RETRIEVAL_RANKER = "retrieval"
RANKER_SOURCES: tuple[str, ...] = (NO_RANKER, IMPRESSIONS_RANKER, RETRIEVAL_RANKER)
"""A two-tower system's ranker: none, trained on the logged feed's impressions, or trained on an earlier
night's retrieved posts labelled by what users did next."""


WorldRegime = Literal["default", "popularity", "collaborative", "content", "freshness", "ratings"]


class WorldConfig(_Section):
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


class QualityConfig(_Section):
    max_bad_fraction: float = Field(
        0.01, ge=0, le=1, description="fail the run when more than this share of a day's raw rows is bad"
    )
    max_future_skew_minutes: int = Field(10, ge=0, description="event time allowed past the end of ds")


class FeaturesConfig(_Section):
    lookback_days: int = Field(
        30, ge=2, description="days of events behind history and the *_lookback columns"
    )
    short_window_days: int = Field(7, ge=1, description="days behind the *_short columns")
    history_days: int = Field(
        365, ge=1, description="days of engagements a user's history (the user tower's input) looks back"
    )
    affinity_tags: int = Field(10, ge=1, description="top tags kept per user")


class TwoTowerConfig(_Section):
    """Two-tower retrieval model: tower sizes, vocabularies, loss options and training schedule."""

    embedding_dim: int = Field(64, ge=4, description="size of the L2-normalised user and item embeddings")
    id_embedding_dim: int = Field(32, ge=4)
    feature_embedding_dim: int = Field(16, ge=2, description="tags, text tokens, source, author, ...")
    hidden_units: int = Field(128, ge=4, description="width of the dense layer of each tower")
    text_tokens: int = Field(5000, ge=100)
    text_sequence_length: int = Field(24, ge=4)
    history_length: int = Field(20, ge=1)
    max_tags: int = Field(8, ge=1, description="item tags and selected tags kept per row")
    oov_buckets: int = Field(64, ge=1)
    id_dropout: float = Field(
        0.1, ge=0, lt=1, description="share of known ids swapped for an OOV bucket while training"
    )
    cold_start_dropout: float = Field(
        0.1, ge=0, lt=1, description="share of training rows shown as a new user (no id, no history)"
    )
    temperature: float = Field(0.1, gt=0)
    learnable_temperature: bool = False
    batch_size: int = Field(512, ge=8)
    epochs: int = Field(4, ge=1)
    learning_rate: float = Field(0.01, gt=0, description="Adam")
    train_days: int = Field(21, ge=1, description="days of retrieval examples the model learns from")
    max_examples_per_user: int = Field(200, ge=1, description="most recent training examples kept per user")
    logq_correction: bool = Field(
        False,
        description="subtract log(sampling probability) from each candidate logit "
        "(selection.two_tower_search decides on replayed nights whether it helps on the data at hand)",
    )
    remove_accidental_hits: bool = True
    mixed_negatives: int = Field(256, ge=0, description="extra uniformly sampled corpus items per batch")
    hard_negatives: int = Field(0, ge=0, description="top-scoring in-batch negatives kept per row; 0 = off")
    deterministic_ops: bool = Field(True, description="tf.config.experimental.enable_op_determinism")
    seed: int = 42


class SelectionConfig(_Section):
    """How the served system is chosen: candidate systems replayed on past nights exactly as they would
    have been served, scored on what users did next, and gated against the champion and the baselines."""

    validation_nights: int = Field(2, ge=1, description="earlier nights the candidates are chosen on")
    window_days: int | None = Field(
        None, ge=1, description="days after a night whose engagements count; None: sized by the data"
    )
    window_choices: list[int] = Field(
        default_factory=lambda: [1, 2, 3, 7, 14, 28, 56],
        description="window lengths tried, shortest first, when window_days is None",
    )
    min_eval_users: int = Field(
        500, ge=1, description="the window is the shortest choice with at least this many evaluated users"
    )
    max_eval_users: int = Field(3000, ge=10, description="a seeded sample is evaluated beyond this")
    ks: list[int] = Field(default_factory=lambda: [10, 50, 100])
    metric: str = Field("recall_at_50", description="what systems are chosen by")
    gate_metrics: list[str] = Field(
        default_factory=lambda: ["recall_at_50", "ndcg_at_10"],
        description="metrics a challenger must not lose on against the best baseline (paired CI)",
    )
    tolerance: float = Field(
        0.01, ge=0, description="the lower end of the paired 95% interval may reach -tolerance"
    )
    fresh_days: float = Field(2.0, gt=0, description="posts younger than this at the night count as fresh")
    resamples: int = Field(1000, ge=100, description="bootstrap resamples of the users")
    retrievers: list[str] = Field(
        default_factory=lambda: list(RETRIEVERS),
        description="retriever families tried; the gate compares the chosen one with the best of the others",
    )
    rankers: list[str] = Field(
        default_factory=lambda: list(RANKER_SOURCES),
        description="rankers tried on the two-tower's lists (none, impressions, retrieval); the first "
        "is kept unless another makes the lists better beyond noise on the validation nights",
    )
    diversify_choices: list[bool] = Field(
        default_factory=lambda: [False, True],
        description="diversification tried off and on; the first is kept unless the other is better "
        "beyond noise",
    )
    two_tower_search: dict[str, list[Any]] = Field(
        default_factory=lambda: {
            "logq_correction": [False, True],
            "train_days": [21, 90, 365],
            "max_examples_per_user": [200, 1000],
            "history_length": [20, 50],
            "temperature": [0.1, 0.05, 0.2],
            "mixed_negatives": [256, 0],
            "epochs": [4, 8],
        },
        description="two-tower settings searched one at a time, in this order, from two_tower's own values: "
        "each keeps the value whose replayed lists score best on the validation nights",
    )
    mmr_lambdas: list[float] = Field(
        default_factory=lambda: [0.9, 0.7, 0.5], description="diversification relevance weights tried"
    )
    retrieval_depths: list[int] = Field(
        default_factory=lambda: [100, 250, 500], description="posts retrieved per user tried for a ranker"
    )
    min_train_examples: int = Field(
        200, ge=1, description="a two-tower variant whose window holds fewer examples is not tried"
    )
    popularity_windows: list[int | None] = Field(
        default_factory=lambda: [1, 3, 7, 30, None], description="most-popular windows tried (None: all)"
    )
    knn_neighbors: list[int] = Field(default_factory=lambda: [20, 100])
    als_factors: list[int] = Field(default_factory=lambda: [16, 64])
    max_item_age_choices: list[float | None] = Field(
        default_factory=lambda: [None, 30.0, 7.0, 3.0],
        description="age limits tried for each retriever (None: no limit); the first is kept unless "
        "another is better beyond noise",
    )
    seed: int = 13

    @model_validator(mode="after")
    def _check(self) -> SelectionConfig:
        if not self.ks or min(self.ks) < 1:
            raise ValueError(f"selection.ks must be a non-empty list of positive cut-offs, got {self.ks}")
        self.ks = sorted(set(self.ks))
        named = {f"{m}_at_{k}" for m in ("recall", "ndcg") for k in self.ks}
        unknown = [m for m in [self.metric, *self.gate_metrics] if m not in named]
        if unknown:
            raise ValueError(f"selection metrics {unknown} are not among {sorted(named)}")
        for name, chosen, known in (
            ("retrievers", self.retrievers, RETRIEVERS),
            ("rankers", self.rankers, RANKER_SOURCES),
        ):
            if not chosen or set(chosen) - set(known):
                raise ValueError(f"selection.{name} must be a non-empty list of {known}, got {chosen}")
        if not self.diversify_choices or not self.max_item_age_choices:
            raise ValueError("selection.diversify_choices and max_item_age_choices need at least one choice")
        unknown = set(self.two_tower_search) - set(TwoTowerConfig.model_fields)
        if unknown or any(not values for values in self.two_tower_search.values()):
            raise ValueError(
                f"selection.two_tower_search maps two_tower settings to lists of values to try; "
                f"unknown settings {sorted(unknown)} or an empty list in {self.two_tower_search}"
            )
        for name, values in self.two_tower_search.items():
            for value in values:
                TwoTowerConfig.model_validate({name: value})
        if not self.mmr_lambdas or not self.retrieval_depths:
            raise ValueError("selection.mmr_lambdas and retrieval_depths need at least one choice")
        return self


class IndexConfig(_Section):
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


class CandidatesConfig(_Section):
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


class RankerConfig(_Section):
    """LightGBM lambdarank ranker: tree shape, boosting schedule, training window and threads."""

    num_leaves: int = Field(31, ge=2)
    learning_rate: float = Field(0.05, gt=0)
    min_data_in_leaf: int = Field(20, ge=1)
    num_boost_round: int = Field(200, ge=1)
    early_stopping_rounds: int = Field(20, ge=1, description="rounds without eval NDCG@10 gain")
    train_days: int = Field(14, ge=1)
    eval_days: int = Field(3, ge=1)
    retrieval_depth: int = Field(
        100,
        ge=1,
        description="the retrieval_rank feature is the rank within this many two-tower results, "
        "depth + 1 beyond it (training and serving alike)",
    )
    num_threads: int = Field(2, ge=1, description="LightGBM threads for training and scoring")
    compiled_scoring: bool = Field(
        True,
        description="serve with the trees compiled to native code (lleaves); false scores with LightGBM",
    )
    seed: int = 42


class DiversifyConfig(_Section):
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


class DigestConfig(_Section):
    """Digest e-mails: who gets one, what it holds, and the links in it (see ``pipelines/digests.py``)."""

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
        description="HMAC key of unsubscribe tokens; set NIGHTFEED_DIGEST__UNSUBSCRIBE_SECRET in production",
    )


class AlertsConfig(_Section):
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


class FreshnessConfig(_Section):
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
    force_retrain: bool = Field(
        False, description="train even when the champion was trained on data up to the same date"
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
        return self

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
                raise FileNotFoundError(f"NIGHTFEED_CONFIG={config_file!r} is not a file")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
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
    """Read settings from defaults, the YAML file and the environment, then apply ``overrides``."""
    return Settings().with_overrides(overrides or None)
