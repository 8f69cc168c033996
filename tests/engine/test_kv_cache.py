"""Reference-counted blocks: shared blocks return to the pool only when the last holder lets go;
truncate drops whole blocks past the new length."""

import pytest

from joulepath.engine import PagedKVCache
from joulepath.model import preset


@pytest.fixture
def cache() -> PagedKVCache:
    return PagedKVCache(preset("tiny-llama"), n_blocks=6, block_size=4)


def test_fork_shares_blocks_and_frees_them_with_the_last_holder(cache: PagedKVCache) -> None:
    cache.reserve(0, 8)
    cache.fork(0, 1)
    assert cache.tables[1] == cache.tables[0] == [0, 1] and [cache.refcount(b) for b in (0, 1)] == [2, 2]
    assert cache.free_blocks == 4  # nothing copied
    cache.release(0)
    assert cache.free_blocks == 4 and cache.refcount(0) == 1
    assert cache.slots(1, 0, 8).tolist() == list(range(8))  # the child still reads them
    cache.release(1)
    assert cache.free_blocks == 6 and cache.refcount(0) == 0


def test_share_appends_blocks_in_use_and_refuses_free_ones(cache: PagedKVCache) -> None:
    cache.reserve(0, 8)
    cache.share(5, [0])  # a prefix of one full block
    cache.reserve(5, 6)  # then its own block
    assert cache.tables[5] == [0, 2] and cache.refcount(0) == 2 and cache.refcount(2) == 1
    with pytest.raises(ValueError, match="in use"):
        cache.share(6, [4])
    with pytest.raises(ValueError, match="already holds"):
        cache.fork(0, 5)


def test_truncate_frees_whole_blocks_past_the_new_length(cache: PagedKVCache) -> None:
    cache.reserve(0, 16)
    cache.truncate(0, 9)  # 9 tokens need 3 blocks of 4
    assert cache.tables[0] == [0, 1, 2] and cache.free_blocks == 3 and cache.refcount(3) == 0
    cache.truncate(0, 8)
    assert cache.tables[0] == [0, 1] and cache.free_blocks == 4
    cache.reserve(0, 12)  # grows again from the pool's lowest free block
    assert cache.tables[0] == [0, 1, 2]


def test_truncate_of_a_shared_block_keeps_it_for_the_other_holder(cache: PagedKVCache) -> None:
    cache.reserve(0, 8)
    cache.fork(0, 1)
    cache.truncate(1, 4)
    assert cache.tables[1] == [0] and cache.refcount(1) == 1 and cache.free_blocks == 4
    cache.truncate(0, 0)
    assert cache.tables[0] == [] and cache.refcount(0) == 1 and cache.free_blocks == 5
