"""Settings of the models and of how the served system is chosen: the retriever and ranker names, the
two-tower, the ranker, and the selection (sections of :class:`pipelines.core.settings.Settings`)."""

from __future__ import annotations

from typing import Any

from pydantic import Field, model_validator

from pipelines.core.section import Section

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


class TwoTowerConfig(Section):
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


class SelectionConfig(Section):
    """How the served system is chosen: candidate systems replayed on past nights exactly as they would
    have been served, scored on what users did next, and gated against the champion and the baselines."""

    validation_nights: int = Field(2, ge=1, description="earlier nights the candidates are chosen on")
    ranker_nights: int = Field(
        0,
        ge=0,
        description="nights before the first validation night whose retrieved posts only train the "
        "retrieval ranker (so it is built, and chosen, on every validation night); skipped where the "
        "data does not reach. With 0 the retrieval ranker is chosen on the validation nights after the "
        "first",
    )
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
    popularity_priors: list[float] = Field(
        default_factory=lambda: [0.0, 0.5, 1.0, 2.0],
        min_length=1,
        description="weights beta of a popularity prior tried on the chosen two-tower's retrieval scores, "
        "cos/T + beta * log q (q: a post's add-one smoothed share of engagements over "
        "features.lookback_days), without retraining; the first is kept unless another makes the lists "
        "better beyond noise on the validation nights",
    )
    blend_weights: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        description="weights w of a blend tried on the chosen two-tower (after its popularity prior): its "
        "retrieval fused with another family's best retriever by weighted reciprocal rank, "
        "(1 - w) / (60 + rank) + w / (60 + other rank); the two-tower alone stays unless a blend makes the "
        "lists better beyond noise on the validation nights; an empty list tries none",
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
    als_regularizations: list[float] = Field(
        default_factory=lambda: [0.05, 10.0],
        min_length=1,
        description="ALS L2 regularisation tried with each of als_factors (every pair is a candidate)",
    )
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
        if any(not r > 0 for r in self.als_regularizations):
            raise ValueError(
                f"selection.als_regularizations must be positive, got {self.als_regularizations}"
            )
        if any(not 0 < w < 1 for w in self.blend_weights):
            raise ValueError(
                f"selection.blend_weights must lie strictly between 0 and 1, got {self.blend_weights}"
            )
        if not self.mmr_lambdas or not self.retrieval_depths:
            raise ValueError("selection.mmr_lambdas and retrieval_depths need at least one choice")
        return self


class RankerConfig(Section):
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
