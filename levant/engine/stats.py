"""Engine metrics: counters, gauges and latency histograms, as plain snapshots.

The engine records; whoever serves /metrics renders ``EngineStats`` (``PROMETHEUS_NAMES``
gives vLLM's metric names). No HTTP or Prometheus client here.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass, field

# vLLM's bucket boundaries, so dashboards built for it read ours unchanged.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)  # fmt: skip
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
               60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip

PROMETHEUS_NAMES = {
    "num_requests_running": "vllm:num_requests_running",  # gauge
    "num_requests_waiting": "vllm:num_requests_waiting",  # gauge
    "kv_cache_usage": "vllm:kv_cache_usage_perc",  # gauge, 0..1
    "prefix_cache_queries": "vllm:prefix_cache_queries",  # counter, tokens
    "prefix_cache_hits": "vllm:prefix_cache_hits",  # counter, tokens
    "prompt_tokens_total": "vllm:prompt_tokens_total",  # counter
    "generation_tokens_total": "vllm:generation_tokens_total",  # counter
    "num_preemptions_total": "vllm:num_preemptions_total",  # counter
    "request_success_total": "vllm:request_success_total",  # counter, label finished_reason
    "time_to_first_token": "vllm:time_to_first_token_seconds",  # histogram
    "inter_token_latency": "vllm:inter_token_latency_seconds",  # histogram
    "e2e_request_latency": "vllm:e2e_request_latency_seconds",  # histogram
}


@dataclass(frozen=True)
class HistogramSnapshot:
    buckets: tuple[float, ...]  # upper bounds; +Inf is implied
    counts: tuple[int, ...]  # cumulative count per bound, then the +Inf count (= count)
    sum: float
    count: int


class Histogram:
    """Observations bucketed as they arrive; thread-safe (the engine thread observes,
    the event loop snapshots)."""

    def __init__(self, buckets: tuple[float, ...]) -> None:
        self.buckets = buckets
        self._counts = [0] * (len(buckets) + 1)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe(self, value: float) -> None:
        with self._lock:
            self._counts[bisect.bisect_left(self.buckets, value)] += 1
            self._sum += value

    def snapshot(self) -> HistogramSnapshot:
        with self._lock:
            cumulative, running = [], 0
            for c in self._counts:
                running += c
                cumulative.append(running)
            return HistogramSnapshot(self.buckets, tuple(cumulative), self._sum, running)


@dataclass(frozen=True)
class EngineStats:
    num_requests_running: int
    num_requests_waiting: int
    kv_cache_usage: float
    kv_cache_tokens: int  # capacity: tokens of context across all requests
    prefix_cache_queries: int
    prefix_cache_hits: int
    prompt_tokens_total: int
    generation_tokens_total: int
    num_preemptions_total: int
    request_success_total: dict[str, int]  # by finish reason
    time_to_first_token: HistogramSnapshot
    inter_token_latency: HistogramSnapshot
    e2e_request_latency: HistogramSnapshot


@dataclass
class EngineMetrics:
    """What the scheduler records as requests progress."""

    prompt_tokens_total: int = 0
    generation_tokens_total: int = 0
    num_preemptions_total: int = 0
    request_success_total: dict[str, int] = field(default_factory=dict)  # by finish reason
    time_to_first_token: Histogram = field(default_factory=lambda: Histogram(TTFT_BUCKETS))
    inter_token_latency: Histogram = field(default_factory=lambda: Histogram(ITL_BUCKETS))
    e2e_request_latency: Histogram = field(default_factory=lambda: Histogram(E2E_BUCKETS))

    def __post_init__(self) -> None:
        self._lock = threading.Lock()  # a new key while another thread copies the dict

    def count_finished(self, reason: str) -> None:
        with self._lock:
            self.request_success_total[reason] = self.request_success_total.get(reason, 0) + 1

    def finished_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self.request_success_total)
