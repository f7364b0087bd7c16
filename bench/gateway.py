"""Gateway overhead: what a hop through a gateway adds over calling the upstream directly.

Targets, all in front of the same trivial upstream (a raw ASGI app in its own
process that answers a canned chat completion, whole or streamed):

- ``direct``          the upstream itself (the baseline)
- ``levant``          a full Levant gateway (``levant serve`` in its own process, with a
                      routing file naming the upstream): API-key auth, stored rate, token
                      and spend limits (admission), usage metering to SQLite, residency
                      routing — the production path. ``--levant-url`` points at one
                      already running instead.
- ``litellm``         LiteLLM's proxy (``litellm --config``, one worker, master key), when
                      its binary is found: install it in its own venv, e.g.
                      ``python -m venv ~/.cache/levant-bench/litellm &&
                      ~/.cache/levant-bench/litellm/bin/pip install 'litellm[proxy]'``
- ``levant-routing``  (``--routing-core``) Levant's routing core alone in its own process:
                      Router.route + UpstreamClient, no auth/limits/metering

Every target is measured at each concurrency and mode (``json``: non-streamed,
``stream``: SSE) in interleaved rounds, by one lean load generator (raw HTTP/1.1
keep-alive over asyncio + httptools, so the client's own cost stays small and the
same for all). Added latency is the target's percentile minus the direct
percentile. The server's CPU time (user + system, its whole process tree) is read
before and after each run: ``cpu µs/req`` is what one request costs the server,
a figure robust to other load on the machine. Requests are bounded in count
(``--requests``) and time (``--max-seconds`` per run); loopback only. Prints a
markdown table and writes JSON to bench/results/.

    python -m bench.gateway [--requests 600] [--rounds 3] [--concurrency 1 64]
        [--modes json stream] [--targets direct levant litellm] [--litellm BIN]
        [--levant-profile FILE] [--levant-url URL --levant-key KEY --levant-model M]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httptools  # type: ignore[import-untyped]
import httpx
import psutil

RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "m"
LEVANT_MODEL = "smollm2-135m-instruct"
LITELLM_KEY = "sk-levant-bench-0123456789abcdef0123456789abcdef"
"""LiteLLM refuses to start without a master key; with one (and no database) it checks it."""
LITELLM_DEFAULT = Path.home() / ".cache" / "levant-bench" / "litellm" / "bin" / "litellm"
WORDS = ["Bon", "jour", ",", " le", " monde", " !", " Ça", " va"]
MODES = ("json", "stream")

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def request_body(model: str, stream: bool) -> dict[str, Any]:
    return {
        "model": model,
        "messages": [{"role": "user", "content": "Say hello."}],
        "max_tokens": 16,
        "stream": stream,
    }


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
        stream = bool(body.get("stream"))
        attempt = pool.stream(body, policy) if stream else pool.complete(body, policy)
        try:
            routed: Any = await router.route(body["model"], policy, attempt)
        except (NoDeploymentInPolicy, UpstreamError) as exc:
            await send({"type": "http.response.start", "status": 503, "headers": []})
            await send({"type": "http.response.body", "body": str(exc).encode()})
            return
        kind = b"text/event-stream" if stream else b"application/json"
        headers = [(b"content-type", kind)] + [
            (k.encode(), v.encode()) for k, v in routed.headers.items()
        ]
        if not stream:
            payload = json.dumps(routed.value.body).encode()
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": payload})
            return
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
                json=request_body(MODEL, False),
                headers={"authorization": f"Bearer {LITELLM_KEY}"},
                timeout=5,
            )
            return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"{url} did not start")


def spawn(
    stack: ExitStack,
    argv: list[str],
    env: dict[str, str] | None = None,
    log: Path | None = None,
    stop_signal: int = signal.SIGTERM,
) -> subprocess.Popen[bytes]:
    out = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
    proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop() -> None:
        proc.send_signal(stop_signal)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    return proc


def start_litellm(stack: ExitStack, binary: str, upstream: str, workdir: Path) -> Target:
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
    argv = [binary, "--config", str(config), "--host", "127.0.0.1", "--port", str(port)]
    proc = spawn(stack, [*argv, "--num_workers", "1"], env, log=workdir / "litellm.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, proc, timeout=180)
    return Target("litellm", port, {"authorization": f"Bearer {LITELLM_KEY}"}, MODEL, proc.pid)


def start_levant(
    stack: ExitStack, upstream: str, workdir: Path, profile: Path | None = None
) -> Target:
    """A full ``levant serve`` whose only deployment of the model is the upstream.

    Auth (a fresh API key), admission against stored limits (rate, tokens per minute
    and month, and a monthly spend budget: all on, set high enough never to refuse)
    and usage metering run as in production; nothing is loaded locally.
    """
    home = workdir / "levant-home"
    routing = workdir / "levant.toml"
    routing.write_text(
        f"""[gateway]
region = "eu-west-paris"

[[deployments]]
name = "bench-upstream"
model = "{LEVANT_MODEL}"
backend = "upstream"
region = "eu-west-paris"
[deployments.upstream]
url = "{upstream}"
max_retries = 0
"""
    )
    env = {**os.environ, "LEVANT_HOME": str(home), "LEVANT_ROUTING_CONFIG": str(routing)}
    levant = [sys.executable, "-m", "levant.cli"]

    def cli(*args: str) -> str:
        done = subprocess.run([*levant, *args], env=env, capture_output=True, text=True, check=True)
        return done.stdout

    key = cli("keys", "create", "--name", "bench").strip().splitlines()[-1]
    cli(
        "limits",
        "set",
        "--rps",
        "1000000",
        "--tpm",
        str(10**13),
        "--tokens-per-month",
        str(10**15),
        "--budget",
        "1000000",
    )
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    serve = ["serve", "--port", str(port), "--model", LEVANT_MODEL]
    if profile is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "levant.cli", *serve]
    else:
        argv = [*levant, *serve]
    # uvicorn re-raises the signal it shut down on: SIGTERM would then kill the process
    # before cProfile writes its file; SIGINT ends it with a KeyboardInterrupt, after.
    stop = signal.SIGINT if profile is not None else signal.SIGTERM
    proc = spawn(stack, argv, env=env, log=workdir / "levant.log", stop_signal=stop)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"levant exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return Target(
                    "levant", port, {"authorization": f"Bearer {key}"}, LEVANT_MODEL, proc.pid
                )
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError("levant did not become healthy")


def tree_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of a process and its descendants so far."""
    if pid is None:
        return float("nan")
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return float("nan")
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


# --- the load: raw HTTP/1.1 keep-alive, parsed by httptools -------------------------------


@dataclass
class Target:
    name: str
    port: int
    headers: dict[str, str]
    model: str
    pid: int | None = None
    """The server process whose CPU time is counted (None: not ours to measure)."""
    host: str = "127.0.0.1"
    raw: dict[bool, bytes] = field(default_factory=dict)

    def request(self, stream: bool) -> bytes:
        if stream not in self.raw:
            body = json.dumps(request_body(self.model, stream)).encode()
            lines = [
                "POST /v1/chat/completions HTTP/1.1",
                f"Host: {self.host}:{self.port}",
                "Content-Type: application/json",
                "User-Agent: levant-bench",
                f"Content-Length: {len(body)}",
                *(f"{k}: {v}" for k, v in self.headers.items()),
            ]
            self.raw[stream] = ("\r\n".join(lines) + "\r\n\r\n").encode() + body
        return self.raw[stream]


class _Connection(asyncio.Protocol):
    """One keep-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.done: asyncio.Future[None] | None = None
        self.body = bytearray()
        self.status = 0
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.status = self.parser.get_status_code()
        self.closed = self.closed or not self.parser.should_keep_alive()
        if self.done is not None and not self.done.done():
            self.done.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._fail(exc or ConnectionError("connection closed"))

    def _fail(self, exc: Exception) -> None:
        if self.done is not None and not self.done.done():
            self.done.set_exception(exc)

    async def send(self, raw: bytes) -> tuple[int, bytes]:
        assert self.transport is not None
        self.done = asyncio.get_running_loop().create_future()
        self.body = bytearray()
        self.transport.write(raw)
        await self.done
        return self.status, bytes(self.body)


class Client:
    def __init__(self, target: Target, stream: bool) -> None:
        self.target = target
        self.stream = stream
        self.raw = target.request(stream)
        self.conn: _Connection | None = None

    async def one(self) -> float:
        started = time.perf_counter()
        if self.conn is None or self.conn.closed:
            if self.conn is not None and self.conn.transport is not None:
                self.conn.transport.close()
            _, self.conn = await asyncio.get_running_loop().create_connection(
                _Connection, self.target.host, self.target.port
            )
        status, body = await self.conn.send(self.raw)
        elapsed = time.perf_counter() - started
        ok = body.rstrip().endswith(b"data: [DONE]") if self.stream else b'"choices"' in body
        if status != 200 or not ok:
            raise RuntimeError(f"{self.target.name}: {status} {body[:300]!r}")
        return elapsed

    def close(self) -> None:
        if self.conn is not None and self.conn.transport is not None:
            self.conn.transport.close()


@dataclass
class Run:
    latencies: list[float]
    wall_s: float
    cpu_s: float


async def measure(
    target: Target, concurrency: int, requests: int, stream: bool, max_s: float
) -> Run:
    """``requests`` requests (fewer if ``max_s`` runs out) over ``concurrency`` connections."""
    clients = [Client(target, stream) for _ in range(concurrency)]
    try:
        await asyncio.gather(*(c.one() for c in clients))  # open and warm every connection
        for _ in range(20):
            await clients[0].one()
        latencies: list[float] = []
        remaining = requests
        deadline = time.perf_counter() + max_s

        async def worker(client: Client) -> None:
            nonlocal remaining
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                latencies.append(await client.one())

        cpu0 = tree_cpu_s(target.pid)
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for c in clients))
        wall = time.perf_counter() - started
        cpu = tree_cpu_s(target.pid) - cpu0
    finally:
        for c in clients:
            c.close()
    return Run(latencies, wall, cpu)


def run_loop(coro: Awaitable[Run]) -> Run:
    try:
        import uvloop

        return uvloop.run(coro)  # type: ignore[arg-type]
    except ImportError:
        return asyncio.run(coro)  # type: ignore[arg-type]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def versions(litellm: str | None) -> dict[str, str]:
    from importlib.metadata import version

    out = {p: version(p) for p in ("fastapi", "starlette", "uvicorn", "httpx", "pydantic")}
    try:
        out["uvloop"] = version("uvloop")
        out["httptools"] = version("httptools")
    except Exception:
        pass
    root = Path(__file__).resolve().parents[1]
    commit = subprocess.run(
        ["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    import levant

    out["levant"] = f"{levant.__version__} ({commit})"
    if litellm:
        py = Path(litellm).parent / "python"
        got = subprocess.run(
            [str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
            capture_output=True,
            text=True,
        )
        out["litellm"] = got.stdout.strip() or "unknown"
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=600, help="per target, mode, concurrency")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds per target")
    parser.add_argument("--max-seconds", type=float, default=30.0, help="time bound per run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument(
        "--targets", nargs="+", choices=["direct", "levant", "litellm"], default=None
    )
    parser.add_argument("--routing-core", action="store_true", help="also Levant's routing core")
    parser.add_argument(
        "--litellm",
        default=str(LITELLM_DEFAULT) if LITELLM_DEFAULT.exists() else None,
        help=f"litellm binary (its proxy; default {LITELLM_DEFAULT}); skipped when absent",
    )
    parser.add_argument("--levant-url", help="a full Levant gateway forwarding to this upstream")
    parser.add_argument("--levant-key", default="")
    parser.add_argument("--levant-model", default=MODEL)
    parser.add_argument("--levant-profile", type=Path, help="run levant serve under cProfile")
    parser.add_argument("--out", type=Path, help="JSON results file (default bench/results/)")
    parser.add_argument("--role", choices=["upstream", "routing"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--upstream", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.role:
        import uvicorn

        app = upstream_app if args.role == "upstream" else routing_gateway(args.upstream)
        uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="error", access_log=False)
        return

    wanted = set(args.targets or ["direct", "levant", "litellm"]) | {"direct"}
    load_before = os.getloadavg()
    skipped: dict[str, str] = {}
    targets: list[Target] = []
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        me = [sys.executable, "-m", "bench.gateway"]
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        proc = spawn(stack, [*me, "--role", "upstream", "--port", str(up_port)])
        wait_ready(upstream, proc)
        targets.append(Target("direct", up_port, {}, MODEL, proc.pid))
        if args.routing_core:
            gw_port = free_port()
            argv = [*me, "--role", "routing", "--port", str(gw_port), "--upstream", upstream]
            proc = spawn(stack, argv)
            wait_ready(f"http://127.0.0.1:{gw_port}", proc)
            targets.append(Target("levant-routing", gw_port, {}, MODEL, proc.pid))
        if "levant" in wanted:
            if args.levant_url:
                url = httpx.URL(args.levant_url)
                auth = {"authorization": f"Bearer {args.levant_key}"} if args.levant_key else {}
                port = url.port or 80
                targets.append(Target("levant", port, auth, args.levant_model, None, url.host))
            else:
                try:
                    targets.append(start_levant(stack, upstream, Path(tmp), args.levant_profile))
                except (RuntimeError, subprocess.CalledProcessError) as exc:
                    log = Path(tmp) / "levant.log"
                    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
                    skipped["levant"] = f"{exc}; log tail: {tail}"
        if "litellm" in wanted:
            if args.litellm:
                try:
                    targets.append(start_litellm(stack, args.litellm, upstream, Path(tmp)))
                except RuntimeError as exc:
                    log = (Path(tmp) / "litellm.log").read_text(errors="replace")[-2000:]
                    skipped["litellm"] = f"{exc}; log tail: {log}"
            else:
                skipped["litellm"] = "no litellm binary (pip install 'litellm[proxy]')"

        runs: dict[tuple[str, str, int], list[Run]] = {}
        for conc in args.concurrency:
            for mode in args.modes:
                per_round = max(conc, args.requests // args.rounds)
                for _ in range(args.rounds):
                    for t in targets:
                        run = run_loop(
                            measure(t, conc, per_round, mode == "stream", args.max_seconds)
                        )
                        runs.setdefault((t.name, mode, conc), []).append(run)

    rows = []
    for conc in args.concurrency:
        for mode in args.modes:
            base = [x for r in runs[("direct", mode, conc)] for x in r.latencies]
            b50, b99 = pct(base, 0.5), pct(base, 0.99)
            for t in targets:
                done = runs[(t.name, mode, conc)]
                lat = [x for r in done for x in r.latencies]
                p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
                cpu = sum(r.cpu_s for r in done)
                rows.append(
                    {
                        "target": t.name,
                        "mode": mode,
                        "concurrency": conc,
                        "requests": len(lat),
                        "p50_ms": p50 * 1e3,
                        "p99_ms": p99 * 1e3,
                        "added_p50_ms": (p50 - b50) * 1e3,
                        "added_p99_ms": (p99 - b99) * 1e3,
                        "mean_ms": statistics.fmean(lat) * 1e3,
                        "requests_per_s": len(lat) / sum(r.wall_s for r in done),
                        "server_cpu_us_per_request": cpu / len(lat) * 1e6,
                    }
                )

    print(
        "| target | mode | streams | requests | p50 ms | p99 ms | added p50 ms | added p99 ms "
        "| req/s | server CPU µs/req |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['target']} | {r['mode']} | {r['concurrency']} | {r['requests']} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['added_p50_ms']:+.2f} | "
            f"{r['added_p99_ms']:+.2f} | {r['requests_per_s']:.0f} | "
            f"{r['server_cpu_us_per_request']:.0f} |"
        )
    for name, why in skipped.items():
        print(f"\n{name} skipped: {why}")

    RESULTS.mkdir(exist_ok=True)
    out = args.out or RESULTS / f"gateway-{datetime.now(UTC):%Y-%m-%d}.json"
    out.write_text(
        json.dumps(
            {
                "benchmark": "gateway-overhead",
                "when": datetime.now(UTC).isoformat(),
                "machine": {
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "cpu": _cpu_name(),
                    "platform": platform.platform(),
                    "loadavg_before": load_before,
                    "loadavg_after": os.getloadavg(),
                },
                "versions": versions(args.litellm if "litellm" in wanted else None),
                "workload": {
                    "modes": args.modes,
                    "stream_chunks": len(CANNED),
                    "rounds": args.rounds,
                    "requests": args.requests,
                    "max_seconds": args.max_seconds,
                },
                "rows": rows,
                "skipped": skipped,
            },
            indent=2,
        )
    )
    print(f"\nwrote {out}")


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
