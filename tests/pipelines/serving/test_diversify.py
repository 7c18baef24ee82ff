"""Diversification: MMR, per-source and per-author caps, the exploration slot, input checks."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.core.settings import DiversifyConfig
from pipelines.serving.diversify import (
    BLOCK_ENTRIES,
    ArrayPools,
    CandidateLists,
    diversify,
    diversify_lists,
    unit_rows,
)


def config(**overrides) -> DiversifyConfig:
    # Caps and exploration off unless a test turns them on.
    base = {
        "mmr_lambda": 1.0,
        "mmr_depth": 50,
        "max_per_source_top": 100,
        "max_per_author_top": 100,
        "cap_window": 5,
        "exploration_slot": None,
    }
    return DiversifyConfig(**{**base, **overrides})


def distinct_codes(n: int) -> np.ndarray:
    return np.arange(n)


def run(items, scores, vectors, cfg, k, sources=None, authors=None, pool=None, seed=0):
    n_catalog = len(vectors)
    return diversify(
        np.asarray(items),
        np.asarray(scores, dtype=float),
        np.asarray(vectors, dtype=np.float32),
        distinct_codes(n_catalog) if sources is None else np.asarray(sources),
        distinct_codes(n_catalog) if authors is None else np.asarray(authors),
        cfg,
        None if pool is None else np.asarray(pool),
        np.random.default_rng(seed),
        k,
    )


# Four catalog items in 3-d: A=(1,0,0), B=(0.96,0.28,0) is a near-duplicate of A (cos 0.96),
# C=(0,1,0) and D=(0,0,1). cos(B,C)=0.28, every other pair 0.
NEAR_DUP = np.array([[1, 0, 0], [0.96, 0.28, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)


def test_lambda_one_returns_score_order() -> None:
    order, reasons = run([0, 1, 2, 3], [0.2, 0.9, 0.5, 0.7], NEAR_DUP, config(mmr_lambda=1.0), k=4)
    # scores 0.9 > 0.7 > 0.5 > 0.2 sit at positions 1, 3, 2, 0.
    assert order.tolist() == [1, 3, 2, 0]
    assert reasons == ["ranked"] * 4


def test_low_lambda_pushes_the_near_duplicate_down() -> None:
    scores = [1.0, 0.9, 0.5, 0.0]  # A, B, C, D; min-max relevance is the same numbers
    order, _ = run([0, 1, 2, 3], scores, NEAR_DUP, config(mmr_lambda=0.5), k=4)
    # slot 1: A (best relevance).
    # slot 2: B 0.5*0.9 - 0.5*0.96 = -0.03; C 0.5*0.5 - 0.5*0 = 0.25; D 0 - 0 = 0      -> C
    # slot 3: B 0.45 - 0.5*max(0.96, 0.28) = -0.03; D 0 - 0.5*max(0, 0) = 0           -> D
    # slot 4: B.
    assert order.tolist() == [0, 2, 3, 1]
    plain, _ = run([0, 1, 2, 3], scores, NEAR_DUP, config(mmr_lambda=1.0), k=4)
    assert plain.tolist() == [0, 1, 2, 3]


def test_mmr_is_independent_of_the_score_scale() -> None:
    # 1000 * s + 5 normalises to the same relevance as s, so the same list comes out.
    scores = np.array([1.0, 0.9, 0.5, 0.0])
    order, _ = run([0, 1, 2, 3], scores * 1000 + 5, NEAR_DUP, config(mmr_lambda=0.5), k=4)
    assert order.tolist() == [0, 2, 3, 1]


def test_slots_after_mmr_depth_keep_score_order() -> None:
    # mmr_depth=2: slots 1-2 by MMR (A, then C as above), then B (0.9) before D (0.0).
    order, _ = run([0, 1, 2, 3], [1.0, 0.9, 0.5, 0.0], NEAR_DUP, config(mmr_lambda=0.5, mmr_depth=2), k=4)
    assert order.tolist() == [0, 2, 1, 3]


def test_positions_refer_to_the_input_lists() -> None:
    # Candidates are catalog rows 3, 0, 2 with scores 0.1, 0.3, 0.2: best first is position 1 (row 0).
    order, _ = run([3, 0, 2], [0.1, 0.3, 0.2], NEAR_DUP, config(), k=3)
    assert order.tolist() == [1, 2, 0]


ORTHO = np.eye(8, dtype=np.float32)


def test_author_cap_keeps_one_item_per_author_in_the_top_five() -> None:
    authors = [1, 1, 2, 2, 3, 3, 4, 5]
    scores = [8, 7, 6, 5, 4, 3, 2, 1]  # already in score order
    order, _ = run(range(8), scores, ORTHO, config(max_per_author_top=1), k=8, authors=authors)
    # Top five: first item of authors 1, 2, 3 (positions 0, 2, 4), then authors 4 and 5 (6, 7);
    # after the cap window the rest follow by score: 1, 3, 5.
    assert order.tolist() == [0, 2, 4, 6, 7, 1, 3, 5]
    top_authors = [authors[p] for p in order[:5]]
    assert len(set(top_authors)) == 5


def test_source_cap_allows_two_per_source() -> None:
    sources = [1, 1, 1, 2]
    order, _ = run(range(4), [4, 3, 2, 1], ORTHO[:4], config(max_per_source_top=2), k=4, sources=sources)
    # Two of source 1 (positions 0, 1), the third of source 1 waits for source 2 (position 3).
    assert order.tolist() == [0, 1, 3, 2]


def test_caps_relax_when_no_candidate_fits() -> None:
    order, _ = run(range(3), [3, 2, 1], ORTHO[:3], config(max_per_author_top=1), k=3, authors=[7, 7, 7])
    # One author only: slots 2 and 3 cannot respect the cap, so they fall back to score order.
    assert order.tolist() == [0, 1, 2]


def test_caps_relax_only_for_the_slot_that_needs_it() -> None:
    authors = [1, 1, 1, 2]
    order, _ = run(range(4), [4, 3, 2, 1], ORTHO[:4], config(max_per_author_top=1), k=4, authors=authors)
    # slot 1: position 0 (author 1); slot 2: only position 3 (author 2) fits; slot 3: nothing fits,
    # so the best remaining, position 1; slot 4: position 2.
    assert order.tolist() == [0, 3, 1, 2]


def test_exploration_item_takes_its_slot() -> None:
    n = 12
    vectors = np.eye(20, dtype=np.float32)
    scores = np.arange(n, 0, -1, dtype=float)  # position p has score n - p: score order is 0..11
    pool = [15, 16, 17]
    order, reasons = run(range(n), scores, vectors, config(exploration_slot=8), k=10, pool=pool, seed=3)
    assert len(order) == 10
    assert reasons[7] == "explore" and reasons.count("explore") == 1
    # Nine ranked items (positions 0..8 in score order) around the exploration item at slot 8.
    ranked = [p for p, r in zip(order, reasons, strict=True) if r == "ranked"]
    assert ranked == list(range(9))
    assert 0 <= order[7] - n < len(pool)


def test_exploration_is_deterministic_for_a_seed() -> None:
    vectors = np.eye(40, dtype=np.float32)
    pool = list(range(20, 40))
    picks = []
    for seed in (1, 1, 2, 3, 4, 5):
        order, _ = run(
            range(10), np.arange(10, 0, -1), vectors, config(exploration_slot=3), k=5, pool=pool, seed=seed
        )
        picks.append(int(order[2]))
    assert picks[0] == picks[1]
    # 20 pool items: five seeds all drawing the same one would be a broken generator.
    assert len(set(picks)) > 1


def test_exploration_skips_items_already_listed() -> None:
    vectors = np.eye(10, dtype=np.float32)
    # The pool holds catalog row 1 (ranked first) and row 6 (not a candidate): only row 6 may be drawn.
    for seed in range(5):
        order, reasons = run(
            [1, 2, 3], [3, 2, 1], vectors, config(exploration_slot=2), k=3, pool=[1, 6], seed=seed
        )
        assert order.tolist() == [0, 3 + 1, 1]
        assert reasons == ["ranked", "explore", "ranked"]


def test_exploration_pool_without_new_items_leaves_the_ranked_list() -> None:
    vectors = np.eye(10, dtype=np.float32)
    order, reasons = run([1, 2, 3], [3, 2, 1], vectors, config(exploration_slot=2), k=3, pool=[1, 2])
    # Rows 1 and 2 are both in the top 2 kept ranked items: nothing to explore.
    assert order.tolist() == [0, 1, 2]
    assert reasons == ["ranked"] * 3


def test_short_list_puts_exploration_after_the_last_candidate() -> None:
    vectors = np.eye(10, dtype=np.float32)
    order, reasons = run([0, 1, 2], [3, 2, 1], vectors, config(exploration_slot=8), k=10, pool=[9])
    # Three candidates, slot 8 does not exist yet: the item goes to slot 4 (position 3 + pool index 0).
    assert order.tolist() == [0, 1, 2, 3]
    assert reasons[-1] == "explore"


def test_exploration_slot_beyond_k_is_unused() -> None:
    vectors = np.eye(10, dtype=np.float32)
    order, reasons = run([0, 1, 2], [3, 2, 1], vectors, config(exploration_slot=4), k=3, pool=[9])
    assert order.tolist() == [0, 1, 2] and "explore" not in reasons


def test_no_duplicates_and_length_on_a_random_fixture() -> None:
    rng = np.random.default_rng(0)
    n_catalog, n = 300, 120
    vectors = rng.standard_normal((n_catalog, 16)).astype(np.float32)
    items = rng.choice(n_catalog, n, replace=False)
    pool = rng.choice(n_catalog, 40, replace=False)
    cfg = DiversifyConfig(mmr_lambda=0.7, mmr_depth=30, exploration_slot=5)
    for k in (0, 1, 10, 100, 200):
        order, reasons = diversify(
            items,
            rng.standard_normal(n),
            vectors,
            rng.integers(0, 5, n_catalog),
            rng.integers(0, 20, n_catalog),
            cfg,
            pool,
            np.random.default_rng(k),
            k,
        )
        rows = np.where(order < n, items[np.minimum(order, n - 1)], pool[np.maximum(order - n, 0)])
        assert len(set(rows.tolist())) == len(rows)
        # min(k, n) items, plus the exploration item when the list is shorter than k (k = 200 > 120).
        expected = min(k, n) + (1 if k > n else 0)
        assert len(order) == len(reasons) == expected


@pytest.mark.parametrize(
    ("items", "scores", "message"),
    [
        ([0, 1], [1.0], "one length"),
        ([0, 1], [1.0, float("nan")], "positions \\[1\\] are not finite"),
        ([0, 2, 0], [1.0, 2.0, 3.0], "duplicate candidates .*0: \\[0, 2\\]"),
        ([0, 9], [1.0, 2.0], "positions \\[1\\] hold rows \\[9\\] outside the catalog of 4"),
    ],
)
def test_bad_inputs_are_named(items, scores, message) -> None:
    with pytest.raises(ValueError, match=message):
        run(items, scores, NEAR_DUP, config(), k=2)


def test_bad_exploration_pool_is_named() -> None:
    with pytest.raises(ValueError, match="exploration_pool positions \\[1\\] hold rows \\[-1\\]"):
        run([0, 1], [1.0, 2.0], NEAR_DUP, config(exploration_slot=1), k=2, pool=[2, -1])


# -- many lists at once ---------------------------------------------------------------------------------
def random_lists(rng: np.random.Generator, n_catalog: int, lengths: list[int]) -> tuple[list, list]:
    lists = [(rng.choice(n_catalog, n, replace=False), np.round(rng.standard_normal(n), 1)) for n in lengths]
    pools = [rng.integers(0, n_catalog, int(rng.integers(0, 12))) for _ in lengths]
    return lists, pools


@pytest.mark.parametrize("block_entries", [BLOCK_ENTRIES, 50])
def test_lists_together_equal_lists_one_by_one(monkeypatch, block_entries) -> None:
    # Scores rounded to one decimal make ties; the pools repeat rows and overlap the lists.
    monkeypatch.setattr("pipelines.serving.diversify.BLOCK_ENTRIES", block_entries)
    rng = np.random.default_rng(4)
    n_catalog = 200
    vectors = rng.standard_normal((n_catalog, 8)).astype(np.float32)
    sources, authors = rng.integers(0, 4, n_catalog), rng.integers(0, 9, n_catalog)
    lists, pools = random_lists(rng, n_catalog, [0, 1, 5, 40, 40, 120, 7])
    pools[2] = np.zeros(0, np.int64)
    cfg = DiversifyConfig(mmr_lambda=0.7, mmr_depth=30, cap_window=6, exploration_slot=3)
    one_by_one = np.random.default_rng(9)
    expected = [
        diversify(items, scores, vectors, sources, authors, cfg, pool, one_by_one, 25)
        for (items, scores), pool in zip(lists, pools, strict=True)
    ]
    together = CandidateLists(
        np.concatenate([[0], np.cumsum([len(items) for items, _ in lists])]),
        np.concatenate([items for items, _ in lists]).astype(np.int64),
        np.concatenate([scores for _, scores in lists]),
    )
    got = diversify_lists(
        together, vectors, sources, authors, cfg, ArrayPools(pools), np.random.default_rng(9), 25
    )
    for u, (order, reasons) in enumerate(expected):
        position = got.position[got.indptr[u] : got.indptr[u + 1]]
        # diversify names the exploration item n + (its position in the pool); the batch gives -1 and
        # the position in the pool separately.
        assert np.where(position >= 0, position, len(lists[u][0]) + got.explore[u]).tolist() == order.tolist()
        assert ["explore" if p < 0 else "ranked" for p in position] == reasons
    assert any(got.explore >= 0) and any(got.explore < 0)


def test_prenormalised_vectors_give_the_same_lists() -> None:
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((60, 5)).astype(np.float32) * 3
    lists, _ = random_lists(rng, 60, [30, 12])
    together = CandidateLists(
        np.array([0, 30, 42]),
        np.concatenate([items for items, _ in lists]),
        np.concatenate([scores for _, scores in lists]),
    )
    codes = np.arange(60)
    cfg = DiversifyConfig(mmr_lambda=0.5, mmr_depth=10, exploration_slot=None)
    plain = diversify_lists(together, vectors, codes, codes, cfg, None, rng, 10)
    unit = diversify_lists(together, unit_rows(vectors), codes, codes, cfg, None, rng, 10, unit_vectors=True)
    assert plain.position.tolist() == unit.position.tolist()


def test_unit_rows_scale_each_row_to_length_one() -> None:
    # (3, 4) has length 5 -> (0.6, 0.8); an all-zero row stays zero; blocks of one row change nothing.
    rows = unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]), block=1)
    assert rows.dtype == np.float32
    np.testing.assert_allclose(rows, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_a_bad_list_is_named() -> None:
    together = CandidateLists(np.array([0, 2, 4]), np.array([0, 1, 2, 2]), np.array([1.0, 2.0, 3.0, 4.0]))
    codes = np.arange(4)
    with pytest.raises(ValueError, match=r"candidate list 1: duplicate candidates .*2: \[0, 1\]"):
        diversify_lists(together, NEAR_DUP, codes, codes, config(), None, np.random.default_rng(0), 2)
    with pytest.raises(ValueError, match="indptr from 0 to len"):
        diversify_lists(
            CandidateLists(np.array([0, 5]), np.array([0, 1]), np.array([1.0, 2.0])),
            NEAR_DUP,
            codes,
            codes,
            config(),
            None,
            np.random.default_rng(0),
            2,
        )
