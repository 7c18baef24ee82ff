"""Index input checks: bad item ids, vectors and queries are named; the embeddings table as arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from pipelines.serving.index import build_scann_index
from pipelines.serving.vectors import embeddings_from_table
from tests.pipelines.serving.index_data import EXACT, good_vectors, table_of


@pytest.mark.parametrize(
    ("ids", "vectors", "message"),
    [
        (np.array(["a", "b", "a", "c"]), good_vectors(), "duplicate item_ids .*'a': \\[0, 2\\]"),
        (np.array(["a", "b", "", "c"]), good_vectors(), "non-empty strings; rows \\[2\\]"),
        (np.array(["a", "b", "c"]), good_vectors(), "3 item_ids but 4 embedding rows"),
        (np.array(["a", "b", "c", "d"]), good_vectors().astype(np.int64), "float array, got dtype int64"),
        (np.array(["a", "b", "c", "d"]), good_vectors()[0], "2-d array"),
        (np.array([], dtype=str), np.zeros((0, 3), np.float32), "empty catalog"),
    ],
)
def test_bad_item_inputs_are_named(ids, vectors, message) -> None:
    with pytest.raises(ValueError, match=message):
        build_scann_index(ids, vectors, EXACT)


def test_nan_and_zero_rows_are_named() -> None:
    vectors = good_vectors()
    vectors[2, 1] = np.nan
    with pytest.raises(
        ValueError, match=r"NaN or infinite values in 1 rows, e.g. rows \[2\] \(items \['c'\]\)"
    ):
        build_scann_index(np.array(["a", "b", "c", "d"]), vectors, EXACT)
    vectors = good_vectors()
    vectors[3] = 0
    with pytest.raises(ValueError, match=r"all zeros .* rows \[3\] \(items \['d'\]\)"):
        build_scann_index(np.array(["a", "b", "c", "d"]), vectors, EXACT)


def test_bad_queries_are_named() -> None:
    index = build_scann_index(np.array(["a", "b", "c", "d"]), good_vectors(), EXACT)
    with pytest.raises(ValueError, match="queries have 2 dimensions, the index has 3"):
        index.search(np.ones((1, 2), np.float32), 2)
    with pytest.raises(ValueError, match="NaN or infinite values in rows \\[1\\]"):
        index.search(np.array([[1, 0, 0], [np.inf, 0, 0]], np.float32), 2)
    with pytest.raises(ValueError, match="k must be at least 1"):
        index.search(np.ones((1, 3), np.float32), 0)


def test_embeddings_table_checks() -> None:
    ok_ids, ok_vectors = embeddings_from_table(table_of(np.array(["a", "b"]), np.ones((2, 3), np.float32)))
    assert ok_ids.tolist() == ["a", "b"] and ok_vectors.shape == (2, 3) and ok_vectors.dtype == np.float32
    uneven = pa.table({"item_id": ["a", "b", "c"], "embedding": [[1.0, 2.0], [1.0, 2.0], [1.0]]})
    with pytest.raises(ValueError, match="row 0 has 2, rows \\[2\\] have \\[1\\] \\(items \\['c'\\]\\)"):
        embeddings_from_table(uneven)
    nulls = pa.table({"item_id": ["a", "b"], "embedding": [[1.0], None]})
    with pytest.raises(ValueError, match="null embedding in rows \\[1\\]"):
        embeddings_from_table(nulls)
    with pytest.raises(ValueError, match="lacks columns \\['embedding'\\]"):
        embeddings_from_table(pa.table({"item_id": ["a"]}))
    with pytest.raises(ValueError, match="must be list<float32>, got list<item: string>"):
        embeddings_from_table(pa.table({"item_id": ["a"], "embedding": [["x"]]}))
