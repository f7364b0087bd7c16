"""``/metrics`` read by Prometheus' own parser, and the 503 a full waiting queue gives.

The exposition text is parsed with ``prometheus_client``'s parser (the reference
for the format), and checked to move the way the requests just made say it must.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from levant.config import Settings
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home

BODY = {
    "model": DEFAULT_MODEL,
    "messages": [{"role": "user", "content": "Name a colour."}],
    "max_tokens": 5,
    "temperature": 0,
}


def _samples(server: LiveServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    r = httpx.get(f"{server.url}/metrics", timeout=10)  # open: no key needed
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_metrics_use_vllm_names_and_count_requests(live_server: LiveServer) -> None:
    model = (("model_name", DEFAULT_MODEL),)
    before = _samples(live_server)
    with live_server.client() as client:
        for _ in range(2):
            r = client.post("/v1/chat/completions", json=BODY)
            assert r.status_code == 200
    after = _samples(live_server)
    usage = r.json()["usage"]

    def delta(name: str, labels: tuple[tuple[str, str], ...] = model) -> float:
        return after[(name, labels)] - before.get((name, labels), 0.0)

    assert delta("vllm:generation_tokens_total") >= 2 * usage["completion_tokens"] - 1
    assert delta("vllm:prompt_tokens_total") > 0
    assert delta("vllm:e2e_request_latency_seconds_count") == 2
    assert delta("vllm:time_to_first_token_seconds_count") == 2
    assert after[("vllm:num_requests_running", model)] == 0
    assert 0.0 <= after[("vllm:kv_cache_usage_perc", model)] <= 1.0
    finished = sum(
        v - before.get(k, 0.0)
        for k, v in after.items()
        if k[0] == "vllm:request_success_total" and ("model_name", DEFAULT_MODEL) in k[1]
    )
    assert finished == 2
    # The same prompt twice: the second finds the first's blocks.
    assert delta("vllm:prefix_cache_hits_total") > 0 or delta("vllm:prefix_cache_hits") > 0


@pytest.fixture(scope="module")
def full_server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """No room in the waiting queue: every generation is refused for capacity."""
    home, catalog = isolated_home(tmp_path_factory.mktemp("full"), model_home)
    settings = Settings(home=home, catalog_path=catalog, max_waiting_requests=0)
    server = LiveServer(settings, preload=[DEFAULT_MODEL])
    server.start()
    yield server
    server.stop()


@pytest.mark.parametrize("stream", [False, True])
def test_a_full_queue_is_a_503_with_retry_after(full_server: LiveServer, stream: bool) -> None:
    with full_server.client() as client:
        r = client.post("/v1/chat/completions", json={**BODY, "stream": stream})
    assert r.status_code == 503
    assert int(r.headers["retry-after"]) >= 1
    err = r.json()
    assert err["object"] == "error" and err["code"] == "capacity_exceeded"
    assert "at capacity" in err["message"]
    # Distinct from a rate limit: the OpenAI dialect says so in its own shape.
    with full_server.client() as client:
        r = client.post("/v1/chat/completions", json={**BODY, "seed": 1})
    assert r.status_code == 503 and r.json()["error"]["code"] == "capacity_exceeded"
