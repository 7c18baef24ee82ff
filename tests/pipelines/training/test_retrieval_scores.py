"""Two-tower score and rank of logged rows, the ranker's retrieval features: places in the index's search,
one dot product per row, and against a full sort of the catalog through an exact index."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.core.settings import IndexConfig
from pipelines.serving.index import build_scann_index
from pipelines.training import retrieval_scores as module
from pipelines.training.retrieval_scores import retrieval_scores_for_rows

N_ITEMS, N_USERS = 60, 7


World = tuple[dict[str, np.ndarray], pa.Array, np.ndarray, pa.Table]


def _world(rng: np.random.Generator, coarse: bool) -> World:
    """User states per ``user|day``, the catalog ids and unit vectors, and 200 logged rows (posts p60..
    are not in the catalog)."""
    draw = (lambda: rng.integers(-2, 3, 4)) if coarse else (lambda: rng.standard_normal(4))
    vectors = np.stack([draw() for _ in range(N_ITEMS)]).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    states = {f"u{i}|{d}": draw().astype(np.float32) + 0.01 for i in range(N_USERS) for d in (1, 2)}
    rows = pa.table(
        {
            "user_id": [f"u{rng.integers(N_USERS)}" for _ in range(200)],
            "ds": pa.array(rng.integers(1, 3, 200).astype(np.int64)),
            "item_id": [f"p{rng.integers(N_ITEMS + 5)}" for _ in range(200)],
        }
    )
    return states, pa.array([f"p{j}" for j in range(N_ITEMS)]), vectors, rows


class _Tower:
    """A user tower looked up from a table of states; counts the rows it embeds."""

    def __init__(self, states: dict[str, np.ndarray]) -> None:
        self.states, self.embedded = states, 0

    def __call__(self, rows: pa.Table) -> np.ndarray:
        self.embedded += rows.num_rows
        keys = [f"{u}|{d}" for u, d in zip(rows["user_id"].to_pylist(), rows["ds"].to_pylist(), strict=True)]
        return np.stack([self.states[k] for k in keys])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _logged(rows: pa.Table) -> list[tuple[str, int, str]]:
    return list(zip(*(rows[c].to_pylist() for c in ("user_id", "ds", "item_id")), strict=True))


@pytest.mark.parametrize("depth", [1, 3, 10, 500])
def test_ranks_are_places_in_the_search_and_scores_one_dot_product_per_row(monkeypatch, depth: int) -> None:
    rng = np.random.default_rng(5)
    states, ids, vectors, rows = _world(rng, coarse=True)

    def search(queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        # Exact, ties (to 4 decimals) in catalog order: the search's own order is what ranks follow.
        scores = queries @ vectors.T
        order = np.argsort(-np.round(scores, 4), axis=1, kind="stable")[:, :k]
        return order, np.take_along_axis(scores, order, axis=1)

    monkeypatch.setattr(module, "QUERY_BLOCK", 5)  # several blocks of user-days
    tower = _Tower(states)
    got = retrieval_scores_for_rows(tower, rows, ids, vectors, search, depth)
    assert tower.embedded == len({(user, day) for user, day, _ in _logged(rows)})  # once per user-day
    expected = []
    for user, day, item in _logged(rows):
        query = _unit(states[f"{user}|{day}"])
        if int(item[1:]) >= N_ITEMS:
            expected.append([np.nan, depth + 1.0])
            continue
        places = search(query[None, :], depth)[0][0].tolist()
        j = int(item[1:])
        expected.append([query @ vectors[j], places.index(j) + 1.0 if j in places else depth + 1.0])
    expected = np.array(expected)
    missing = np.isnan(expected[:, 0])
    assert missing.any() and (expected[:, 1] == depth + 1).any()
    expected[missing, 0] = np.nanmin(expected[:, 0])
    np.testing.assert_allclose(got[:, 0], expected[:, 0], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(got[:, 1], expected[:, 1])


@pytest.mark.parametrize("prior", [False, True])
@pytest.mark.parametrize("depth", [1, 10, 100])
def test_through_an_exact_index_the_ranks_are_those_of_a_full_sort_of_the_catalog(
    depth: int, prior: bool
) -> None:
    # With a popularity prior, the index and the features score cosine + the post's offset alike.
    rng = np.random.default_rng(9)
    states, ids, vectors, rows = _world(rng, coarse=False)  # no ties
    offsets = rng.uniform(-0.8, 0.0, N_ITEMS).astype(np.float32) if prior else None
    index = build_scann_index(np.asarray(ids.to_pylist(), object), vectors, IndexConfig(), offsets=offsets)
    assert index.settings.mode == "brute_force" and index.settings.score_offset == prior
    search = index.search_positions
    got = retrieval_scores_for_rows(
        _Tower(states), rows, ids, index.embeddings, search, depth, item_offsets=offsets
    )
    for r, (user, day, item) in enumerate(_logged(rows)):
        if int(item[1:]) >= N_ITEMS:
            assert got[r, 1] == depth + 1
            continue
        scores = vectors @ _unit(states[f"{user}|{day}"]) + (0.0 if offsets is None else offsets)
        own = scores[int(item[1:])]
        assert got[r, 1] == min(int((scores > own).sum()) + 1, depth + 1), r
        assert got[r, 0] == pytest.approx(own, abs=1e-6)


def test_no_rows_give_no_scores() -> None:
    rows = pa.table({"user_id": pa.array([], pa.string()), "ds": pa.array([], pa.int64()), "item_id": []})
    got = retrieval_scores_for_rows(_Tower({}), rows, pa.array(["p0"]), np.ones((1, 4)), None, 10)
    assert got.shape == (0, 2)
