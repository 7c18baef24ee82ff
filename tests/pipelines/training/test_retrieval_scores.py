"""Two-tower score and rank of logged rows, the ranker's retrieval features, against a full sort."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.training.retrieval_scores import retrieval_scores_for_rows


class _TableTowers:
    """Towers whose embeddings are looked up from fixed tables: the ranking logic is what is tested."""

    def __init__(self, users: dict[str, np.ndarray], items: dict[str, np.ndarray]) -> None:
        self.users, self.items = users, items

    def embed_users(self, rows: pa.Table) -> np.ndarray:
        return np.stack([self.users[u] for u in rows.column("user_id").to_pylist()])

    def embed_items(self, catalog: pa.Table) -> np.ndarray:
        return np.stack([self.items[i] for i in catalog.column("item_id").to_pylist()])


def _reference(towers: _TableTowers, rows: pa.Table, catalog: pa.Table, depth: int) -> np.ndarray:
    item_ids = catalog.column("item_id").to_pylist()
    item_vectors = towers.embed_items(catalog)
    out = []
    for user, item in zip(
        rows.column("user_id").to_pylist(), rows.column("item_id").to_pylist(), strict=True
    ):
        scores = item_vectors @ towers.users[user]
        if item not in item_ids:
            out.append([np.nan, depth + 1.0])
            continue
        own = scores[item_ids.index(item)]
        out.append([own, min(int((scores > own).sum()) + 1, depth + 1)])
    result = np.array(out)
    result[np.isnan(result[:, 0]), 0] = np.nanmin(result[:, 0])
    return result


@pytest.mark.parametrize("depth", [1, 3, 10, 500])
def test_scores_and_capped_ranks_match_a_full_sort_of_the_catalog(depth: int) -> None:
    rng = np.random.default_rng(5)
    n_items, n_users = 60, 7
    # Coarse values make ties: a tied post does not outrank the row's own post.
    items = {f"p{j}": rng.integers(-2, 3, 4).astype(np.float32) for j in range(n_items)}
    users = {f"u{i}|{d}": rng.integers(-2, 3, 4).astype(np.float32) for i in range(n_users) for d in (1, 2)}
    rows = pa.table(
        {
            "user_id": [f"u{rng.integers(n_users)}" for _ in range(200)],
            "ds": pa.array(rng.integers(1, 3, 200).astype(np.int64)),
            "item_id": [f"p{rng.integers(n_items + 5)}" for _ in range(200)],  # p60.. are not in the catalog
        }
    )
    catalog = pa.table({"item_id": list(items)})

    class Towers(_TableTowers):
        def embed_users(self, picked: pa.Table) -> np.ndarray:
            keys = [
                f"{u}|{d}"
                for u, d in zip(picked["user_id"].to_pylist(), picked["ds"].to_pylist(), strict=True)
            ]
            return np.stack([self.users[k] for k in keys])

    towers = Towers(users, items)
    keyed = rows.set_column(
        0,
        "user_id",
        [[f"{u}|{d}" for u, d in zip(rows["user_id"].to_pylist(), rows["ds"].to_pylist(), strict=True)]],
    )
    got = retrieval_scores_for_rows(towers, rows, catalog, depth)
    np.testing.assert_array_equal(got, _reference(towers, keyed, catalog, depth))
    assert (got[:, 1] == depth + 1).any()
    if depth < n_items:
        assert (got[:, 1] <= depth).any()
