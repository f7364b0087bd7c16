"""Block pool: ref counts, LRU eviction, and invariants under a random workload."""

from __future__ import annotations

from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from levant.engine.block_hash import extra_keys, hash_block
from levant.engine.block_pool import BlockPool
from levant.engine.scheduler import Scheduler
from tests.engine.conftest import FakeRunner, expected_tokens, make_request, make_scheduler


def test_free_cached_blocks_are_evicted_least_recently_freed_first() -> None:
    pool = BlockPool(3)
    a, b, c = pool.get_new_blocks(3)
    for block, tag in ((a, b"a"), (b, b"b"), (c, b"c")):
        pool.cache_block(block, tag)
    pool.free_blocks([b])
    pool.free_blocks([a])
    pool.free_blocks([c])
    assert pool.num_free_blocks == 3 and pool.get_cached_block(b"b") is b
    (first,) = pool.get_new_blocks(1)
    assert first is b and pool.get_cached_block(b"b") is None  # evicted, the others stay
    assert pool.get_cached_block(b"a") is a


def test_touching_a_free_cached_block_takes_it_out_of_the_free_queue() -> None:
    pool = BlockPool(2)
    (a,) = pool.get_new_blocks(1)
    pool.cache_block(a, b"x")
    pool.free_blocks([a])
    pool.touch([a])
    assert a.ref_cnt == 1 and pool.num_free_blocks == 1
    (other,) = pool.get_new_blocks(1)
    assert other is not a


def test_block_hash_chains_parent_tokens_and_extra_keys() -> None:
    ek = extra_keys("m", None)
    h1 = hash_block(None, [1, 2], ek)
    assert hash_block(h1, [3, 4], ek) != hash_block(hash_block(None, [9, 9], ek), [3, 4], ek)
    assert hash_block(None, [1, 2], extra_keys("m", "tenant")) != h1
    assert hash_block(None, [1, 2], extra_keys("other-model", None)) != h1
    assert extra_keys("ab", "c") != extra_keys("a", "bc")


def check_invariants(sched: Scheduler) -> None:
    """Every reference is held by exactly one live request's block list."""
    pool = sched.kv.pool
    held: Counter[int] = Counter()
    for rid in sched.requests:
        held.update(sched.kv.block_ids(rid))
    for block in pool.blocks:
        assert block.ref_cnt == held[block.block_id] >= 0
        if held[block.block_id] > 1:
            assert block.block_hash is not None  # only cached blocks are shared
    assert pool.num_free_blocks == sum(1 for b in pool.blocks if b.ref_cnt == 0)
    for request in sched.waiting:
        assert not sched.kv.block_ids(request.request_id)


request_spec = st.tuples(
    st.lists(st.integers(0, 2), min_size=1, max_size=20),  # small vocab: prefixes repeat
    st.integers(1, 24),  # max tokens
    st.sampled_from([None, "tenant-a"]),  # cache salt
    st.integers(0, 6),  # arrival step
    st.one_of(st.none(), st.integers(0, 30)),  # abort at this step, if any
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(request_spec, min_size=1, max_size=12),
    num_blocks=st.integers(11, 16),
    budget=st.integers(1, 40),
)
def test_random_workload_leaves_every_block_free(
    specs: list[tuple[list[int], int, str | None, int, int | None]],
    num_blocks: int,
    budget: int,
) -> None:
    # Every request fits alone (20 + 24 tokens <= 11 blocks of 4), so nothing may hang.
    sched, runner = (
        make_scheduler(num_blocks=num_blocks, block_size=4, budget=budget),
        FakeRunner(4),
    )
    tokens: dict[str, list[int]] = {}
    finished: Counter[str] = Counter()
    aborted: set[str] = set()
    step_no = 0
    while step_no < 20 or sched.has_unfinished_requests():
        assert step_no < 5_000, "hang"
        for i, (prompt, max_tokens, salt, arrival, _) in enumerate(specs):
            if arrival == step_no:
                sched.add_request(make_request(f"r{i}", prompt, max_tokens, salt=salt))
        for i, (*_, abort_at) in enumerate(specs):
            if abort_at == step_no and f"r{i}" in sched.requests:
                sched.abort(f"r{i}")
                aborted.add(f"r{i}")
        out = sched.schedule()
        assert out.num_tokens <= budget
        outputs = sched.update(out, runner.execute(out.scheduled) if out.scheduled else {})
        for o in outputs:
            tokens.setdefault(o.request_id, []).extend(o.new_token_ids)
            finished[o.request_id] += o.finished
        check_invariants(sched)
        step_no += 1

    assert all(b.ref_cnt == 0 for b in sched.kv.pool.blocks)
    assert sched.kv.pool.num_free_blocks == num_blocks
    assert set(finished) == {f"r{i}" for i in range(len(specs))}
    assert set(finished.values()) == {1}  # exactly one final output each
    for i, (prompt, max_tokens, *_) in enumerate(specs):
        produced = tokens.get(f"r{i}", [])
        full = expected_tokens(prompt, max_tokens)
        if f"r{i}" in aborted:
            assert produced == full[: len(produced)]
        else:
            assert produced == full
