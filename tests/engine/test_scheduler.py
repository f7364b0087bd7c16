"""Scheduler with a fake runner: budget, running-first, chunked prefill, preemption."""

from __future__ import annotations

from tests.engine.conftest import (
    FakeRunner,
    expected_tokens,
    make_request,
    make_scheduler,
    run_all,
    step,
)


def test_token_budget_is_respected_and_prompts_are_chunked() -> None:
    sched, runner = make_scheduler(budget=10), FakeRunner(4)
    sched.add_request(make_request("a", list(range(25)), max_tokens=3))
    tokens = run_all(sched, runner)
    assert all(sum(s.num_new_tokens for s in st) <= 10 for st in runner.steps)
    # 25 prompt tokens in chunks of 10, 10, 5; then one token per step.
    assert [st[0].num_new_tokens for st in runner.steps] == [10, 10, 5, 1, 1]
    assert [st[0].start for st in runner.steps] == [0, 10, 20, 25, 26]
    assert tokens["a"] == expected_tokens(list(range(25)), 3)


def test_running_requests_are_scheduled_before_waiting_ones() -> None:
    sched, runner = make_scheduler(budget=8), FakeRunner(4)
    sched.add_request(make_request("first", [1, 2, 3], max_tokens=5))
    step(sched, runner)  # "first" prefilled and running
    sched.add_request(make_request("second", list(range(20)), max_tokens=2))
    step(sched, runner)
    scheduled = runner.steps[-1]
    assert [s.request.request_id for s in scheduled] == ["first", "second"]
    assert [s.num_new_tokens for s in scheduled] == [1, 7]  # the decode, then what is left


def test_waiting_requests_keep_arrival_order() -> None:
    sched, runner = make_scheduler(budget=4), FakeRunner(4)
    for rid in "abc":
        sched.add_request(make_request(rid, [7] * 6, max_tokens=1))
    step(sched, runner)
    assert [s.request.request_id for s in runner.steps[0]] == ["a"]


def test_max_num_seqs_limits_running_requests() -> None:
    sched, runner = make_scheduler(budget=100, max_seqs=2), FakeRunner(4)
    for rid in "abcd":
        sched.add_request(make_request(rid, [1, 2], max_tokens=4))
    first = step(sched, runner)
    assert len(sched.running) == 2 and len(sched.waiting) == 2
    tokens = run_all(sched, runner)
    for o in first:
        tokens[o.request_id] = o.new_token_ids + tokens[o.request_id]
    assert tokens == {rid: expected_tokens([1, 2], 4) for rid in "abcd"}


def test_preemption_frees_blocks_and_resume_gives_the_same_tokens() -> None:
    # 8 blocks of 4 tokens: two requests of 12 + 12 tokens cannot both finish resident.
    sched, runner = make_scheduler(num_blocks=8, block_size=4, budget=64), FakeRunner(4)
    prompts = {"a": [1] * 10, "b": [2] * 10}
    for rid, prompt in prompts.items():
        sched.add_request(make_request(rid, prompt, max_tokens=12))
    tokens = run_all(sched, runner)
    assert sched.metrics.num_preemptions_total > 0
    assert tokens == {rid: expected_tokens(p, 12) for rid, p in prompts.items()}
    assert sched.kv.pool.num_free_blocks == 8


def test_kv_exhaustion_never_hangs_even_with_a_full_queue() -> None:
    sched, runner = make_scheduler(num_blocks=6, block_size=4, budget=16), FakeRunner(4)
    prompts = {f"r{i}": [i] * (5 + i) for i in range(12)}
    for rid, prompt in prompts.items():
        sched.add_request(make_request(rid, prompt, max_tokens=24 - len(prompt)))
    tokens = run_all(sched, runner)
    assert tokens == {rid: expected_tokens(p, 24 - len(p)) for rid, p in prompts.items()}


def test_abort_frees_blocks_and_reports_abort() -> None:
    sched, runner = make_scheduler(num_blocks=16), FakeRunner(4)
    sched.add_request(make_request("a", list(range(10)), max_tokens=50))
    sched.add_request(make_request("queued", list(range(10)), max_tokens=50))
    sched.max_num_seqs = 1
    step(sched, runner)
    assert sched.kv.pool.num_free_blocks < 16
    sched.abort("a")
    sched.abort("queued")
    outs = step(sched, runner)
    assert {(o.request_id, o.finish_reason) for o in outs} == {("a", "abort"), ("queued", "abort")}
    assert sched.kv.pool.num_free_blocks == 16 and not sched.has_unfinished_requests()
    assert [s.request.request_id for st in runner.steps for s in st] == ["a"]  # never "queued"


def test_stop_token_ends_the_request() -> None:
    prompt = [5, 6, 7]
    first = expected_tokens(prompt, 1)[0]
    sched, runner = make_scheduler(), FakeRunner(4)
    sched.add_request(make_request("a", prompt, max_tokens=10, stop=frozenset({first})))
    outs = step(sched, runner)
    assert outs[0].new_token_ids == [first] and outs[0].finish_reason == "stop"
    assert sched.kv.pool.num_free_blocks == 64


def test_prefix_hit_skips_computed_blocks_but_not_the_last_token() -> None:
    sched, runner = make_scheduler(budget=64), FakeRunner(4)
    prompt = list(range(16))  # exactly 4 full blocks
    sched.add_request(make_request("a", prompt, max_tokens=1))
    run_all(sched, runner)
    sched.add_request(make_request("b", prompt, max_tokens=1))
    outs = run_all(sched, runner)
    last = runner.steps[-1][0]
    # 3 blocks come from the cache; the 4th holds the last token, which must be computed.
    assert (last.start, last.num_new_tokens) == (12, 4)
    assert outs["b"] == expected_tokens(prompt, 1)
    assert sched.kv.prefix_hits == 12 and sched.kv.prefix_queries == 32
