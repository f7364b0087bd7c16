"""``GET /metrics``: every loaded engine's stats in Prometheus' text format.

Names follow vLLM's (``PROMETHEUS_NAMES``) so dashboards built for it read Levant's
unchanged; each series carries a ``model_name`` label. Rendering only: the numbers
come from ``AsyncEngine.stats()``.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from levant.api.deps import StateDep
from levant.engine.stats import PROMETHEUS_NAMES, EngineStats, HistogramSnapshot

router = APIRouter()

_GAUGES = ("num_requests_running", "num_requests_waiting", "kv_cache_usage")
_COUNTERS = (
    "prefix_cache_queries",
    "prefix_cache_hits",
    "prompt_tokens_total",
    "generation_tokens_total",
    "num_preemptions_total",
)
_HISTOGRAMS = ("time_to_first_token", "inter_token_latency", "e2e_request_latency")
_HELP = {
    "num_requests_running": "Requests in the running batch.",
    "num_requests_waiting": "Requests queued and not yet started.",
    "kv_cache_usage": "Fraction of KV-cache blocks in use (0..1).",
    "prefix_cache_queries": "Prompt tokens looked up in the prefix cache.",
    "prefix_cache_hits": "Prompt tokens found in the prefix cache.",
    "prompt_tokens_total": "Prompt tokens computed.",
    "generation_tokens_total": "Tokens generated.",
    "num_preemptions_total": "Requests preempted (recomputed) for lack of KV blocks.",
    "request_success_total": "Requests finished, by finish reason.",
    "time_to_first_token": "Seconds from arrival to the first generated token.",
    "inter_token_latency": "Seconds between consecutive generated tokens.",
    "e2e_request_latency": "Seconds from arrival to the end of the request.",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _num(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def render(stats: dict[str, EngineStats]) -> str:
    """The exposition text for ``stats`` (model id -> stats)."""
    lines: list[str] = []

    def header(field: str, kind: str) -> str:
        name = PROMETHEUS_NAMES[field]
        lines.append(f"# HELP {name} {_HELP[field]}")
        lines.append(f"# TYPE {name} {kind}")
        return name

    for field in _GAUGES:
        name = header(field, "gauge")
        for model, s in stats.items():
            lines.append(f'{name}{{model_name="{_label(model)}"}} {_num(getattr(s, field))}')
    for field in _COUNTERS:
        name = header(field, "counter")
        for model, s in stats.items():
            lines.append(f'{name}{{model_name="{_label(model)}"}} {getattr(s, field)}')
    name = header("request_success_total", "counter")
    for model, s in stats.items():
        for reason, count in sorted(s.request_success_total.items()):
            labels = f'model_name="{_label(model)}",finished_reason="{_label(reason)}"'
            lines.append(f"{name}{{{labels}}} {count}")
    for field in _HISTOGRAMS:
        name = header(field, "histogram")
        for model, s in stats.items():
            h: HistogramSnapshot = getattr(s, field)
            m = f'model_name="{_label(model)}"'
            for bound, count in zip(h.buckets, h.counts, strict=False):
                lines.append(f'{name}_bucket{{{m},le="{bound}"}} {count}')
            lines.append(f'{name}_bucket{{{m},le="+Inf"}} {h.count}')
            lines.append(f"{name}_sum{{{m}}} {_num(h.sum)}")
            lines.append(f"{name}_count{{{m}}} {h.count}")
    return "\n".join(lines) + "\n"


@router.get("/metrics", include_in_schema=False)
async def metrics(state: StateDep) -> PlainTextResponse:
    stats = {s.card.id: s.engine.stats() for s in state.registry.generators()}
    return PlainTextResponse(render(stats), media_type="text/plain; version=0.0.4")
