"""The caching benchmark's pure parts: Belady's offline optimum and the block-hash chain it runs on
(the benchmark itself serves jp-small for ~20 s in --quick, too long for a test)."""

from joulepath.bench.caching import belady_hit_blocks, block_hash_chain, spread


def test_belady_keeps_the_block_needed_soonest_where_lru_would_not() -> None:
    # Capacity 2. After [1] and [2] the cache is {1, 2}. Block 3 is never used again, so Belady bypasses
    # it and requests 4 and 5 hit 1 and 2: 2 hits. LRU would evict 1 for 3, then 2 for 1: 0 hits.
    assert belady_hit_blocks([[1], [2], [3], [1], [2]], capacity_blocks=2) == 2


def test_belady_evicts_the_block_used_farthest_in_the_future() -> None:
    # Capacity 2: {1, 2} after two requests; at [3] the next uses are 1 -> request 4, 2 -> request 3,
    # 3 -> request 5, so 3 (farthest) is bypassed; [2] hits, [1] hits, [3] misses: 2 hits.
    assert belady_hit_blocks([[1], [2], [3], [2], [1], [3]], capacity_blocks=2) == 2
    # With room for 3 every repeat hits; with none nothing does.
    assert belady_hit_blocks([[1], [2], [3], [2], [1], [3]], capacity_blocks=3) == 3
    assert belady_hit_blocks([[1], [1]], capacity_blocks=0) == 0


def test_belady_counts_only_a_leading_run_of_cached_blocks() -> None:
    # [1, 2] then [1, 3] then [9, 2]: block 2's KV is valid only after block 1, so [9, 2] hits nothing.
    assert belady_hit_blocks([[1, 2], [1, 3], [1, 2]], capacity_blocks=2) == 3
    assert belady_hit_blocks([[1, 2], [9, 2]], capacity_blocks=4) == 0


def test_block_hash_chain_is_positional_and_leaves_the_last_token_to_compute() -> None:
    a = block_hash_chain(list(range(33)), 16)
    assert len(a) == 2  # (33 - 1) // 16 full blocks can hit
    assert len(block_hash_chain(list(range(32)), 16)) == 1  # a fully cached prompt recomputes its last block
    b = block_hash_chain([*range(16, 32), *range(16, 32), 0], 16)
    assert a[1] != b[1] and b[0] != b[1]  # equal tokens after another prefix, or at another position, differ
    assert block_hash_chain([*range(16), 99, 5], 16)[0] == a[0]


def test_spread_says_when_it_includes_one() -> None:
    assert spread([0.9, 1.0, 1.2]) == {"median": 1.0, "min": 0.9, "max": 1.2, "includes_1": True}
    assert spread([1.1, 1.3])["includes_1"] is False
