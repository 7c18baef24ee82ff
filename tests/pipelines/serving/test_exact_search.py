"""Exact top-k search: blocked matrix products against a full sort."""

from __future__ import annotations

import numpy as np

from pipelines.serving.exact_search import exact_top_k


def test_exact_top_k_blocks_agree_with_a_full_sort() -> None:
    rng = np.random.default_rng(2)
    items = rng.standard_normal((1000, 8)).astype(np.float32)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    items[500] = items[10]  # an exact tie: the earlier item must come first
    queries = np.concatenate([rng.standard_normal((29, 8)), items[10:11]]).astype(np.float32)
    full = queries @ items.T
    expected = np.lexsort((np.broadcast_to(np.arange(1000), full.shape), -full), axis=1)[:, :25]
    # Blocks of 7 items x 3 queries exercise the dense first blocks and the sparse later ones.
    positions, scores = exact_top_k(items, queries, 25, block_bytes=4 * 3 * 7, item_block=7)
    np.testing.assert_array_equal(positions, expected)
    np.testing.assert_allclose(scores, np.take_along_axis(full, expected, axis=1), rtol=1e-5, atol=1e-5)
    assert positions[-1, :2].tolist() == [10, 500]
    default_positions, _ = exact_top_k(items, queries, 25)
    np.testing.assert_array_equal(default_positions, expected)
