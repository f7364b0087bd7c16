"""Gateway overhead: what a hop through a gateway adds over calling the upstream directly.

Targets, all in front of the same trivial upstream (a raw ASGI app in its own
process that answers a canned streamed chat completion):

- ``direct``          the upstream itself (the baseline)
- ``levant-routing``  Levant's routing core in its own process: Router.route over an
                      in-policy deployment + UpstreamClient SSE pass-through, response
                      headers levant-region / levant-deployment (no auth/limits/metering)
- ``litellm``         LiteLLM's proxy (``litellm --config``), when its binary is found
- ``levant``          a full Levant gateway (``levant serve`` in its own process, with a
                      routing file naming the upstream): API-key auth, rate-limit
                      admission, usage metering to SQLite, residency routing — the
                      production path. ``--levant-url`` points at one already running.

Each target is measured at each concurrency with interleaved rounds; added
latency is the target's percentile minus the direct percentile. Prints a
markdown table and writes JSON to bench/results/.

    python -m bench.gateway [--requests 600] [--concurrency 1 64]
        [--litellm /path/to/litellm] [--levant-url URL --levant-key KEY --levant-model M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "m"
LITELLM_KEY = "sk-levant-bench-0123456789abcdef0123456789abcdef"
"""LiteLLM refuses to start without a master key; with one (and no database) it checks it."""
WORDS = ["Bon", "jour", ",", " le", " monde", " !", " Ça", " va"]
BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Say hello."}], "stream": True}

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


# --- the trivial upstream: raw ASGI, canned SSE ------------------------------------------


def _canned() -> list[bytes]:
    def chunk(content: str, finish: str | None = None, usage: bool = False) -> bytes:
        payload: dict[str, Any] = {
            "id": "cmpl-bench",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": MODEL,
            "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": finish}],
        }
        if usage:
            payload["usage"] = {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17}
        return b"data: " + json.dumps(payload).encode() + b"\n\n"

    return [*(chunk(w) for w in WORDS), chunk("", "stop", usage=True), b"data: [DONE]\n\n"]


CANNED = _canned()
COMPLETION = json.dumps(
    {
        "id": "cmpl-bench",
        "object": "chat.completion",
        "created": 0,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "".join(WORDS)},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
    }
).encode()


async def upstream_app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    stream = bool(body) and json.loads(body).get("stream", False)
    if not stream:
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": COMPLETION})
        return
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream")],
        }
    )
    for part in CANNED:
        await send({"type": "http.response.body", "body": part, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


# --- Levant's routing core as a pass-through gateway -------------------------------------


def routing_gateway(
    upstream_url: str,
) -> Callable[[dict[str, Any], Receive, Send], Awaitable[None]]:
    from levant.routing import (
        Deployment,
        NoDeploymentInPolicy,
        ResidencyPolicy,
        Router,
        UpstreamClient,
        UpstreamError,
        UpstreamPool,
        UpstreamStreamBroken,
    )

    deployment = Deployment(
        name="bench-upstream",
        model=MODEL,
        region="eu-west-paris",
        backend="upstream",
        upstream={"url": upstream_url},  # type: ignore[arg-type]
    )
    router = Router([deployment])
    pool = UpstreamPool({deployment.name: UpstreamClient(deployment)})
    policy = ResidencyPolicy.from_workspace(["EU"])

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        body = json.loads(raw)
        try:
            routed = await router.route(body["model"], policy, pool.stream(body, policy))
        except (NoDeploymentInPolicy, UpstreamError) as exc:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": str(exc).encode()})
            return
        headers = [(b"content-type", b"text/event-stream")] + [
            (k.encode(), v.encode()) for k, v in routed.headers.items()
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        try:
            async for chunk in routed.value:
                await send({"type": "http.response.body", "body": chunk.raw, "more_body": True})
            await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})
        except UpstreamStreamBroken:
            router.record_failure(routed.deployment)
            await send({"type": "http.response.body", "body": b""})

    return app


# --- processes ---------------------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited with {proc.returncode}")
        try:
            httpx.post(
                f"{url}/v1/chat/completions",
                json={**BODY, "stream": False},
                headers={"authorization": f"Bearer {LITELLM_KEY}"},
                timeout=5,
            )
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def spawn(
    stack: ExitStack, argv: list[str], env: dict[str, str] | None = None, log: Path | None = None
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    return proc


def start_litellm(stack: ExitStack, binary: str, upstream: str, workdir: Path) -> str:
    port = free_port()
    config = workdir / "litellm.yaml"
    config.write_text(
        "model_list:\n"
        f"  - model_name: {MODEL}\n"
        "    litellm_params:\n"
        f"      model: openai/{MODEL}\n"
        f"      api_base: {upstream}/v1\n"
        "      api_key: sk-bench\n"
        "litellm_settings:\n"
        "  telemetry: false\n"
        "general_settings:\n"
        f"  master_key: {LITELLM_KEY}\n"
    )
    env = {
        **os.environ,
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "LITELLM_TELEMETRY": "False",
        "LITELLM_LOG": "ERROR",
    }
    proc = spawn(
        stack,
        [
            binary,
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--num_workers",
            "1",
        ],
        env,
        log=workdir / "litellm.log",
    )
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, timeout=180)
    return url


# --- the load ----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    headers: dict[str, str]
    model: str = MODEL


async def one(client: httpx.AsyncClient, target: Target) -> float:
    body = {**BODY, "model": target.model}
    started = time.perf_counter()
    async with client.stream(
        "POST", f"{target.url}/v1/chat/completions", json=body, headers=target.headers
    ) as response:
        if response.status_code != 200:
            await response.aread()
            raise RuntimeError(f"{target.name}: {response.status_code} {response.text[:200]}")
        done = False
        async for line in response.aiter_lines():
            done = done or line == "data: [DONE]"
    if not done:
        raise RuntimeError(f"{target.name}: stream ended without [DONE]")
    return time.perf_counter() - started


async def measure(target: Target, concurrency: int, requests: int) -> tuple[list[float], float]:
    """Latencies of ``requests`` streams at ``concurrency``, and the wall time they took."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60) as client:
        for _ in range(min(20, requests)):  # warm the connections and the target
            await one(client, target)
        latencies: list[float] = []
        queue = iter(range(requests))

        async def worker() -> None:
            for _ in queue:
                latencies.append(await one(client, target))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - started
    return latencies, wall


def start_levant(stack: ExitStack, upstream: str, workdir: Path) -> tuple[str, str, str]:
    """A full ``levant serve`` whose only deployment of the model is the upstream.

    Returns (url, api key, model). Auth, admission against (default) limits and
    usage metering all run as in production; nothing is loaded locally.
    """
    model = "smollm2-135m-instruct"
    home = workdir / "levant-home"
    routing = workdir / "levant.toml"
    routing.write_text(
        f"""[gateway]
region = "eu-west-paris"

[[deployments]]
name = "bench-upstream"
model = "{model}"
backend = "upstream"
region = "eu-west-paris"
[deployments.upstream]
url = "{upstream}"
max_retries = 0
"""
    )
    env = {**os.environ, "LEVANT_HOME": str(home), "LEVANT_ROUTING_CONFIG": str(routing)}
    levant = [sys.executable, "-m", "levant.cli"]
    created = subprocess.run(
        [*levant, "keys", "create", "--name", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    key = created.stdout.strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = spawn(
        stack,
        [*levant, "serve", "--port", str(port), "--model", model],
        env=env,
        log=workdir / "levant.log",
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"levant exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return url, key, model
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("levant did not become healthy")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="per target and concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument(
        "--litellm",
        default=shutil.which("litellm"),
        help="litellm binary (its proxy); skipped when absent",
    )
    parser.add_argument("--levant-url", help="a full Levant gateway forwarding to this upstream")
    parser.add_argument("--levant-key", default="")
    parser.add_argument("--levant-model", default=MODEL)
    parser.add_argument(
        "--gateway-python",
        default=sys.executable,
        help="interpreter for the levant-routing process (e.g. one with uvloop + httptools)",
    )
    parser.add_argument("--role", choices=["upstream", "routing"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        import uvicorn

        app = upstream_app if args.role == "upstream" else routing_gateway(args.upstream)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)
        return

    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        me = [sys.executable, "-m", "bench.gateway"]
        up_port, gw_port = free_port(), free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        proc = spawn(stack, [*me, "--role", "upstream", "--port", str(up_port)])
        wait_ready(upstream, proc)
        gateway = f"http://127.0.0.1:{gw_port}"
        proc = spawn(
            stack,
            [
                args.gateway_python,
                "-m",
                "bench.gateway",
                "--role",
                "routing",
                "--port",
                str(gw_port),
                "--upstream",
                upstream,
            ],
        )
        wait_ready(gateway, proc)
        targets = [Target("direct", upstream, {}), Target("levant-routing", gateway, {})]
        skipped: dict[str, str] = {}
        if args.litellm:
            try:
                url = start_litellm(stack, args.litellm, upstream, Path(tmp))
                auth = {"authorization": f"Bearer {LITELLM_KEY}"}
                targets.append(Target("litellm", url, auth))
            except RuntimeError as exc:
                log = (Path(tmp) / "litellm.log").read_text(errors="replace")[-2000:]
                skipped["litellm"] = f"{exc}; log tail: {log}"
        else:
            skipped["litellm"] = "no litellm binary (pip install 'litellm[proxy]')"
        if args.levant_url:
            auth = {"authorization": f"Bearer {args.levant_key}"} if args.levant_key else {}
            targets.append(Target("levant", args.levant_url.rstrip("/"), auth, args.levant_model))
        else:
            try:
                url, key, model = start_levant(stack, upstream, Path(tmp))
                targets.append(Target("levant", url, {"authorization": f"Bearer {key}"}, model))
            except (RuntimeError, subprocess.CalledProcessError) as exc:
                log = Path(tmp) / "levant.log"
                tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                skipped["levant"] = f"{exc}; log tail: {tail}"

        raw: dict[str, dict[int, list[float]]] = {t.name: {} for t in targets}
        walls: dict[str, dict[int, float]] = {t.name: {} for t in targets}
        for conc in args.concurrency:
            per_round = max(conc, args.requests // args.rounds)
            for _ in range(args.rounds):
                for t in targets:
                    lat, wall = asyncio.run(measure(t, conc, per_round))
                    raw[t.name].setdefault(conc, []).extend(lat)
                    walls[t.name][conc] = walls[t.name].get(conc, 0.0) + wall

    rows = []
    for conc in args.concurrency:
        base = raw["direct"][conc]
        b50, b99 = pct(base, 0.5), pct(base, 0.99)
        for t in targets:
            lat = raw[t.name][conc]
            p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
            rows.append(
                {
                    "target": t.name,
                    "concurrency": conc,
                    "requests": len(lat),
                    "p50_ms": p50 * 1e3,
                    "p99_ms": p99 * 1e3,
                    "added_p50_ms": (p50 - b50) * 1e3,
                    "added_p99_ms": (p99 - b99) * 1e3,
                    "mean_ms": statistics.fmean(lat) * 1e3,
                    "requests_per_s": len(lat) / walls[t.name][conc],
                }
            )

    print("| target | streams | requests | p50 ms | p99 ms | added p50 ms | added p99 ms | req/s |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['target']} | {r['concurrency']} | {r['requests']} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['added_p50_ms']:+.2f} | {r['added_p99_ms']:+.2f} | "
            f"{r['requests_per_s']:.0f} |"
        )
    for name, why in skipped.items():
        print(f"\n{name} skipped: {why}")

    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"gateway-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "gateway-overhead",
                "when": datetime.now(UTC).isoformat(),
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "platform": platform.platform(),
                },
                "workload": {"stream": True, "chunks": len(CANNED), "rounds": args.rounds},
                "gateway_python": args.gateway_python,
                "rows": rows,
                "skipped": skipped,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
