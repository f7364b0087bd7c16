"""Shared pieces for engine tests: scheduler-level fakes and a tiny random model."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from levant.engine.block_hash import extra_keys
from levant.engine.kv_cache_manager import KVCacheManager
from levant.engine.protocol import EngineOutput, EngineRequest, SamplingParams
from levant.engine.request import Request
from levant.engine.scheduler import ScheduledRequest, Scheduler
from levant.models.config import ModelConfig
from levant.models.transformer import Transformer, build_model

TINY = ModelConfig(
    vocab_size=256,
    dim=64,
    n_layers=2,
    n_heads=4,
    n_kv_heads=2,
    hidden_dim=128,
    head_dim=16,
    max_position=512,
)


def fake_next_token(tokens: list[int]) -> int:
    """A deterministic 'model': the next token is a function of the whole sequence."""
    h = 0
    for t in tokens:
        h = (h * 1_000_003 + t + 1) % 2_147_483_647
    return h % 97


class FakeRunner:
    """Stands in for ModelRunner: checks the block tables cover what is computed and
    'samples' fake_next_token for each request that reaches its end."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self.steps: list[list[ScheduledRequest]] = []

    def execute(self, scheduled: list[ScheduledRequest]) -> dict[str, int]:
        self.steps.append(scheduled)
        out = {}
        for s in scheduled:
            assert s.num_new_tokens > 0
            assert len(s.block_ids) * self.block_size >= s.start + s.num_new_tokens
            if s.samples:
                out[s.request.request_id] = fake_next_token(s.request.all_token_ids)
        return out


def make_request(
    rid: str,
    prompt: list[int],
    max_tokens: int,
    *,
    salt: str | None = None,
    stop: frozenset[int] = frozenset(),
) -> Request:
    params = SamplingParams(temperature=0.0, max_tokens=max_tokens, stop_token_ids=stop)
    return Request(
        EngineRequest(rid, prompt, params, cache_salt=salt),
        max_new_tokens=max_tokens,
        at_model_limit=False,
        extra_keys=extra_keys("fake-model", salt),
        arrival_time=0.0,
        device=torch.device("cpu"),
    )


def make_scheduler(
    num_blocks: int = 64, block_size: int = 4, budget: int = 32, max_seqs: int = 16
) -> Scheduler:
    kv = KVCacheManager(num_blocks, block_size, enable_caching=True)
    return Scheduler(kv, max_num_batched_tokens=budget, max_num_seqs=max_seqs, clock=lambda: 0.0)


def step(scheduler: Scheduler, runner: FakeRunner) -> list[EngineOutput]:
    out = scheduler.schedule()
    sampled = runner.execute(out.scheduled) if out.scheduled else {}
    return scheduler.update(out, sampled)


def run_all(
    scheduler: Scheduler, runner: FakeRunner, max_steps: int = 10_000
) -> dict[str, list[int]]:
    tokens: dict[str, list[int]] = {}
    for _ in range(max_steps):
        if not scheduler.has_unfinished_requests():
            return tokens
        for o in step(scheduler, runner):
            tokens.setdefault(o.request_id, []).extend(o.new_token_ids)
    raise AssertionError("the scheduler did not finish (a hang)")


def expected_tokens(prompt: list[int], n: int) -> list[int]:
    seq = list(prompt)
    for _ in range(n):
        seq.append(fake_next_token(seq))
    return seq[len(prompt) :]


def random_model(config: ModelConfig = TINY, seed: int = 0) -> Transformer:
    torch.manual_seed(seed)
    weights = Transformer(config).state_dict()
    # Sharpen attention so that which positions are visible visibly matters.
    weights = {k: v * 3 if ".wq." in k or ".wk." in k else v for k, v in weights.items()}
    return build_model(config, weights)


@pytest.fixture(scope="module")
def tiny_model() -> Transformer:
    return random_model()


def random_prompts(n: int, low: int, high: int, seed: int = 1, vocab: int = 256) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(low, high, (n,), generator=g).tolist()
    return [torch.randint(0, vocab, (length,), generator=g).tolist() for length in lengths]


Stepper = Callable[[], list[EngineOutput]]
