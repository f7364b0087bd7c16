"""Scheduler: which requests compute how many tokens this step, under a token budget.

There is no prefill phase and no decode phase: every request catches its
``num_computed_tokens`` up to ``num_tokens``, running requests first, then waiting ones
in arrival order. A prompt longer than the budget is computed over several steps
(chunked prefill). When blocks run out, the most recently admitted running request is
preempted (its blocks freed, recomputed later), never the engine.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from levant.engine.kv_cache_manager import KVCacheManager
from levant.engine.protocol import EngineOutput, FinishReason, TokenLogprob
from levant.engine.request import Request, RequestStatus
from levant.engine.stats import EngineMetrics


@dataclass(frozen=True)
class ScheduledRequest:
    request: Request
    start: int  # first position computed this step (the request's computed tokens so far)
    num_new_tokens: int
    block_ids: list[int]  # the request's block table after this step's allocation
    samples: bool  # this step reaches the end of the sequence, so a token is sampled


@dataclass
class SchedulerOutput:
    scheduled: list[ScheduledRequest] = field(default_factory=list)
    preempted: list[Request] = field(default_factory=list)

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new_tokens for s in self.scheduled)


class Scheduler:
    def __init__(
        self,
        kv: KVCacheManager,
        *,
        max_num_batched_tokens: int,
        max_num_seqs: int,
        clock: Callable[[], float],
        metrics: EngineMetrics | None = None,
    ) -> None:
        self.kv = kv
        self.max_num_batched_tokens = max_num_batched_tokens
        self.max_num_seqs = max_num_seqs
        self.clock = clock
        self.metrics = metrics or EngineMetrics()
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.requests: dict[str, Request] = {}
        self._finished: list[EngineOutput] = []  # ended outside update(): aborts, timeouts

    @property
    def num_waiting_tokens(self) -> int:
        return sum(r.num_prompt_tokens for r in self.waiting)

    def has_unfinished_requests(self) -> bool:
        return bool(self.requests) or bool(self._finished)

    def add_request(self, request: Request) -> None:
        if request.max_new_tokens <= 0:  # max_tokens=0: done before it starts
            request.status = RequestStatus.FINISHED
            self._finished.append(_output(request, [], "length"))
            return
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_id: str, reason: FinishReason = "abort") -> None:
        """End a request now (its blocks are free before the next step); unknown ids are ignored."""
        request = self.requests.get(request_id)
        if request is None:
            return
        if request.status is RequestStatus.RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self._finish(request, reason)
        self._finished.append(_output(request, [], reason))

    def schedule(self) -> SchedulerOutput:
        self._expire(self.clock())
        out = SchedulerOutput()
        budget = self.max_num_batched_tokens

        i = 0  # running requests first: they already hold blocks
        while i < len(self.running) and budget > 0:
            request = self.running[i]
            n = min(request.num_tokens - request.num_computed_tokens, budget)
            while self.kv.allocate_slots(request, n) is None:
                victim = self.running.pop()  # the latest admitted gives way
                self._preempt(victim)
                out.preempted.append(victim)
                if victim is request:
                    break
            if request.status is not RequestStatus.RUNNING:
                break  # preempted itself: nothing left to make room with
            out.scheduled.append(self._scheduled(request, n))
            budget -= n
            i += 1

        # Then waiting requests, in order, while the budget, seats and blocks allow.
        while not out.preempted and self.waiting and budget > 0:
            if len(self.running) >= self.max_num_seqs:
                break
            request = self.waiting[0]
            hits, num_hit = self.kv.get_computed_blocks(request)
            n = min(request.num_tokens - num_hit, budget)
            if self.kv.allocate_slots(request, n, hits) is None:
                break  # keep arrival order: nobody overtakes the head of the queue
            self.waiting.popleft()
            self.kv.record_prefix_query(request.num_tokens, num_hit)
            if request.num_cached_tokens < 0:
                request.num_cached_tokens = num_hit
            request.num_computed_tokens = num_hit
            request.status = RequestStatus.RUNNING
            self.running.append(request)
            out.scheduled.append(self._scheduled(request, n))
            budget -= n
        return out

    def update(self, out: SchedulerOutput, sampled: dict[str, int]) -> list[EngineOutput]:
        """Advance the scheduled requests by what was computed and sampled; their deltas."""
        outputs, self._finished = self._finished, []
        now = self.clock()
        for s in out.scheduled:
            request = s.request
            if request.is_finished:
                continue
            request.num_computed_tokens += s.num_new_tokens
            token = sampled.get(request.request_id)
            if token is None:
                continue  # prefill still catching up
            self._record_token(request, now)
            request.append_output(token)
            reason = request.check_stop()
            if reason is not None:
                self.running.remove(request)
                self._finish(request, reason)
            logprob, request.sampled_logprob = request.sampled_logprob, None
            outputs.append(_output(request, [token], reason, logprob))
        return outputs

    def _scheduled(self, request: Request, n: int) -> ScheduledRequest:
        start = request.num_computed_tokens
        block_ids = self.kv.block_ids(request.request_id)
        return ScheduledRequest(request, start, n, block_ids, start + n == request.num_tokens)

    def _preempt(self, request: Request) -> None:
        self.kv.free(request)
        request.status = RequestStatus.WAITING
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.metrics.num_preemptions_total += 1
        self.waiting.appendleft(request)

    def _finish(self, request: Request, reason: FinishReason) -> None:
        self.kv.free(request)
        request.status = RequestStatus.FINISHED
        request.finish_reason = reason
        del self.requests[request.request_id]
        self.metrics.count_finished(reason)
        self.metrics.e2e_request_latency.observe(self.clock() - request.arrival_time)

    def _record_token(self, request: Request, now: float) -> None:
        m = self.metrics
        if request.first_token_time is None:
            request.first_token_time = now
            m.time_to_first_token.observe(now - request.arrival_time)
            m.prompt_tokens_total += request.num_prompt_tokens
        elif request.last_token_time is not None:
            m.inter_token_latency.observe(now - request.last_token_time)
        request.last_token_time = now
        m.generation_tokens_total += 1

    def _expire(self, now: float) -> None:
        for request in [*self.running, *self.waiting]:
            if request.deadline is not None and now >= request.deadline:
                self.abort(request.request_id)


def _output(
    request: Request,
    tokens: list[int],
    reason: FinishReason | None,
    logprob: TokenLogprob | None = None,
) -> EngineOutput:
    return EngineOutput(
        request.request_id,
        tokens,
        reason is not None,
        reason,
        request.num_prompt_tokens,
        max(request.num_cached_tokens, 0),
        None if logprob is None else [logprob],
    )
