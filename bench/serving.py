"""HTTP serving benchmark: Levant vs llama.cpp's llama-server vs transformers generate.

The boundary is the HTTP API: each server is started as its own process on the same
SmolLM2-135M-Instruct GGUF with the same thread count, driven by a streaming load
generator (asyncio + httpx, OpenAI ``/v1/chat/completions`` with ``stream: true``), then
stopped before the next one starts -- never two servers at once. Per request it records
time to first content token (TTFT), the gaps between content chunks (inter-token latency,
ITL), completion tokens (from ``usage``) and the end time; per concurrency level it
reports TTFT p50/p99, ITL p50, output tok/s (aggregate over the level's wall time, and
median per stream), requests/s, and the server process' peak RSS (VmHWM, children
included) at the end of the scenario.

Scenarios (every request generates exactly ``--new-tokens`` tokens: Levant via
``min_tokens`` = ``max_tokens``, llama-server via ``ignore_eos``):

- ``short``   distinct ~100-token prompts, no shared prefix.
- ``prefix``  ~1,000-token prompts sharing a ~1,000-token common prefix plus a short
              distinct question each (prefix cache). One cold request first (its TTFT is
              reported as "cold TTFT"), then one warm request with the prefix cached
              ("cached TTFT"), then the concurrency levels.

Peers:

- ``levant``        ``levant serve`` with ``LEVANT_AUTH=0`` (no API keys for the bench),
                    ``LEVANT_THREADS=--threads``, one run per ``--levant-dtype``.
- ``llama``         llama.cpp's ``llama-server`` with ``--parallel`` = concurrency and
                    ``-t``/``-tb`` = ``--threads`` (restarted per concurrency level),
                    ``cache_prompt: true``. Built by this script from the llama.cpp
                    sources vendored in the ``llama-cpp-python==0.3.36`` sdist into
                    ``~/.cache/levant-bench/llama.cpp-0.3.36/`` (reused when present;
                    ~3 minutes on 2 cores). A failed build is recorded and skipped.
                    llama-cpp-python's own Python server has no parallel slots, so it is
                    not the peer. Runs with ``--no-repack`` by default (``--llama-args``):
                    for Q4_1 weights that only turns off ggml's AMX kernels, which
                    segfault in this build on AMX-capable Xeons.
- ``transformers``  in-process ``generate`` (single stream, fp32, greedy, same prompt as
                    the scenario, same thread count): prefill tok/s and decode tok/s;
                    no HTTP, so it only fills those columns.

Run (defaults are the full grid; ~25 minutes on a 2-core CPU)::

    python -m bench.serving
    python -m bench.serving --servers levant,llama --levant-dtype float32,int8,int4+compile
    python -m bench.serving --quick        # smoke test: c=1,2, 8 new tokens, 2 requests

Prints one markdown table per scenario and appends the run to
``bench/results/serving-<date>.json``; the tables are meant for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx

from bench.decode import MODEL, find_model

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
LLAMA_CPP_PYTHON = "0.3.36"
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "levant-bench"
LLAMA_DIR = CACHE / f"llama.cpp-{LLAMA_CPP_PYTHON}"
LLAMA_ARGS = "--no-repack"
"""Q4_1 weights have no CPU repack in ggml, only the AMX one, which segfaults in this build
on AMX-capable Xeons (ggml_backend_amx_mul_mat during warm-up); --no-repack turns it off."""
LLAMA_CMAKE_FLAGS = [
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DBUILD_SHARED_LIBS=OFF",
    "-DCMAKE_BUILD_TYPE=Release",
]


# --- llama-server build --------------------------------------------------------------------


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_llama_server(jobs: int = 2) -> tuple[Path | None, dict[str, Any]]:
    """Path to a llama-server built from the llama-cpp-python sdist's vendored llama.cpp.

    Reuses ``LLAMA_DIR/build/bin/llama-server`` when present. Returns (None, info with
    ``error``) when any step fails, so the caller can record it and go on.
    """
    binary = LLAMA_DIR / "build" / "bin" / "llama-server"
    info: dict[str, Any] = {"source": f"llama-cpp-python=={LLAMA_CPP_PYTHON} sdist"}
    if binary.is_file():
        info["build"] = "cached"
        return binary, info
    LLAMA_DIR.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    log = LLAMA_DIR / "build.log"
    try:
        sdist = LLAMA_DIR / f"llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz"
        if not sdist.is_file():
            _log(f"downloading llama-cpp-python=={LLAMA_CPP_PYTHON} sdist ...")
            _run(
                [
                    sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
                    "--no-deps", f"llama-cpp-python=={LLAMA_CPP_PYTHON}",
                    "-d", str(LLAMA_DIR),
                ],
                log,
            )  # fmt: skip
        src = LLAMA_DIR / f"llama_cpp_python-{LLAMA_CPP_PYTHON}" / "vendor" / "llama.cpp"
        if not (src / "CMakeLists.txt").is_file():
            _log(f"unpacking {sdist.name} ...")
            with tarfile.open(sdist) as tar:
                tar.extractall(LLAMA_DIR, filter="data")
        build = LLAMA_DIR / "build"
        _log(f"building llama-server in {build} (cmake, -j{jobs}; a few minutes) ...")
        _run(["cmake", "-S", str(src), "-B", str(build), *LLAMA_CMAKE_FLAGS], log)
        _run(
            ["cmake", "--build", str(build), "--target", "llama-server", f"-j{jobs}"],
            log,
        )
        if not binary.is_file():
            raise RuntimeError(f"build finished but {binary} is missing")
    except Exception as exc:  # recorded and reported; the other peers still run
        info["error"] = f"{type(exc).__name__}: {exc} (log: {log})"
        _log(f"!! llama-server build FAILED: {info['error']}")
        return None, info
    info["build"] = "built"
    info["build_s"] = round(time.perf_counter() - t0, 1)
    _log(f"llama-server built in {info['build_s']:.0f} s: {binary}")
    return binary, info


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[0]} {cmd[1]} ... exited {proc.returncode}")


# --- prompts ----------------------------------------------------------------------------------

SYSTEM = "You are a helpful assistant. Answer in plain English."
_WORDS = (
    "the of and to in is was for on that with as it by at from his an were are which this "
    "be or has had first one their its new after but who not they have her she two been "
    "other when there all during into school time may years more most only over city some "
    "world would where later up such used many can state about national out known university "
    "united then made river house water light market garden music paper story village "
    "morning winter summer train window table letter doctor teacher mountain island bridge "
    "company family country history people problem question reason result science system "
    "small large early late young old long short quiet bright careful simple strange"
)
WORDS = _WORDS.split()


class PromptMaker:
    """Deterministic English-ish chat prompts calibrated to a token count.

    Counts tokens with the GGUF's own tokenizer through ``transformers`` (chat template
    included) when it loads; otherwise counts one token per word, which is close for this
    word list. The servers' ``usage.prompt_tokens`` is what the results report.
    """

    def __init__(self, gguf: Path) -> None:
        self.tokenizer: Any = None
        try:
            from transformers import AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        except Exception as exc:  # fall back to word counts
            _log(f"(prompt lengths estimated by words: no tokenizer: {exc})")

    def count(self, messages: list[dict[str, str]]) -> int:
        if self.tokenizer is None:
            return sum(len(m["content"].split()) for m in messages) + 6 * len(messages)
        out = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=True, return_dict=True
        )
        return len(out["input_ids"])

    @staticmethod
    def text(seed: str, n_words: int) -> str:
        rng = _rng(seed)
        words: list[str] = []
        while len(words) < n_words:
            sentence = [rng.choice(WORDS) for _ in range(rng.randint(6, 14))]
            sentence[0] = sentence[0].capitalize()
            words += sentence
            words[-1] += "."
        return " ".join(words[:n_words])

    def calibrated(
        self, target: int, build: Callable[[int], list[dict[str, str]]]
    ) -> list[dict[str, str]]:
        """``build(n_words)`` with n_words adjusted until the prompt is ~``target`` tokens."""
        n = max(1, target - 20)
        best = build(n)
        for _ in range(8):
            got = self.count(best)
            if abs(got - target) <= 2:
                break
            n = max(1, n + (target - got) * 3 // 4 or (1 if target > got else -1))
            best = build(n)
        return best

    def short(self, tag: str, target: int) -> list[dict[str, str]]:
        def build(n: int) -> list[dict[str, str]]:
            body = self.text(tag, n)
            return [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": f"{tag}: {body}\nSummarise this in one line."},
            ]

        return self.calibrated(target, build)

    def prefix_document(self, target: int) -> str:
        """A shared document such that document + a question is ~``target`` tokens."""

        def build(n: int) -> list[dict[str, str]]:
            return self.with_question(self.text("shared-document", n), "calibration")

        messages = self.calibrated(target, build)
        return messages[1]["content"].split("\n\nQuestion ", 1)[0]

    @staticmethod
    def with_question(document: str, tag: str) -> list[dict[str, str]]:
        rng = _rng(tag)
        topic = " ".join(rng.choice(WORDS) for _ in range(3))
        return [
            {"role": "system", "content": SYSTEM},
            {
                "role": "user",
                "content": f"{document}\n\nQuestion {tag}: in one sentence, what does the "
                f"text above say about {topic}?",
            },
        ]


def _rng(seed: str) -> random.Random:
    return random.Random(int.from_bytes(hashlib.sha256(seed.encode()).digest()[:8], "big"))


# --- load generator ---------------------------------------------------------------------------


@dataclass
class RequestResult:
    ok: bool
    start: float
    end: float
    ttft_s: float | None = None
    first_token: float | None = None
    last_token: float | None = None
    itls_s: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int | None = None
    cached_tokens: int | None = None
    content_events: int = 0
    error: str | None = None


async def stream_request(
    client: httpx.AsyncClient, url: str, body: dict[str, Any]
) -> RequestResult:
    """One streamed chat completion: times the content chunks and reads the final usage."""
    start = time.perf_counter()
    res = RequestResult(ok=False, start=start, end=start)
    usage: dict[str, Any] | None = None
    try:
        async with client.stream("POST", url, json=body) as resp:
            if resp.status_code != 200:
                text = (await resp.aread()).decode(errors="replace")[:300]
                res.error = f"HTTP {resp.status_code}: {text}"
                res.end = time.perf_counter()
                return res
            async for line in resp.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if chunk.get("usage"):
                    usage = chunk["usage"]
                for choice in chunk.get("choices") or []:
                    if (choice.get("delta") or {}).get("content"):
                        if res.first_token is None:
                            res.first_token = now
                            res.ttft_s = now - start
                        else:
                            res.itls_s.append(now - (res.last_token or now))
                        res.last_token = now
                        res.content_events += 1
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        res.end = time.perf_counter()
        return res
    res.end = time.perf_counter()
    if usage is not None:
        res.completion_tokens = int(usage.get("completion_tokens") or 0)
        res.prompt_tokens = usage.get("prompt_tokens")
        details = usage.get("prompt_tokens_details") or {}
        res.cached_tokens = details.get("cached_tokens", usage.get("num_cached_tokens"))
    else:
        res.completion_tokens = res.content_events
    res.ok = res.first_token is not None
    if not res.ok:
        res.error = "no content token in the stream"
    return res


async def run_level(
    url: str, bodies: list[dict[str, Any]], concurrency: int
) -> tuple[float, list[RequestResult]]:
    """``concurrency`` workers drain the request list; returns (wall seconds, results)."""
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    results: list[RequestResult] = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(1800.0, connect=30.0)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:

        async def worker() -> None:
            while not queue.empty():
                body = queue.get_nowait()
                results.append(await stream_request(client, url, body))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return wall, results


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default), None on no data."""
    if not values:
        return None
    s = sorted(values)
    k = (len(s) - 1) * q / 100
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def summarise(
    wall: float, results: list[RequestResult], new_tokens: int, concurrency: int
) -> dict[str, Any]:
    ok = [r for r in results if r.ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    itls = [x for r in ok for x in r.itls_s]
    per_stream = [
        (r.completion_tokens - 1) / (r.last_token - r.first_token)
        for r in ok
        if r.first_token is not None
        and r.last_token is not None
        and r.last_token > r.first_token
        and r.completion_tokens > 1
    ]
    out_tokens = sum(r.completion_tokens for r in ok)
    prompts = [r.prompt_tokens for r in ok if r.prompt_tokens is not None]
    cached = [r.cached_tokens for r in ok if r.cached_tokens is not None]
    return {
        "concurrency": concurrency,
        "requests": len(results),
        "failed": len(results) - len(ok),
        "errors": sorted({r.error for r in results if r.error})[:5],
        "wall_s": wall,
        "ttft_p50_s": percentile(ttfts, 50),
        "ttft_p99_s": percentile(ttfts, 99),
        "itl_p50_s": percentile(itls, 50),
        "itl_p99_s": percentile(itls, 99),
        "output_tok_s": out_tokens / wall if wall > 0 else None,
        "per_stream_tok_s": statistics.median(per_stream) if per_stream else None,
        "req_s": len(ok) / wall if wall > 0 else None,
        "completion_tokens": out_tokens,
        "short_completions": sum(1 for r in ok if r.completion_tokens != new_tokens),
        "prompt_tokens_median": statistics.median(prompts) if prompts else None,
        "cached_tokens_median": statistics.median(cached) if cached else None,
        "ttfts_s": ttfts,
    }


# --- server processes -------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def peak_rss_mib(pid: int) -> float | None:
    """Sum of VmHWM (peak resident set) over the process and its descendants, in MiB."""
    total = 0
    for p in _descendants(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024 if total else None


class ServerProcess:
    """A server in its own process group, logging to a file; stopped by its group id."""

    def __init__(
        self, label: str, cmd: list[str], env: dict[str, str], port: int, log_dir: Path
    ) -> None:
        self.label, self.cmd, self.port = label, cmd, port
        self.log = log_dir / f"{label.replace(' ', '_').replace('/', '_')}-{port}.log"
        self.base = f"http://127.0.0.1:{port}"
        with self.log.open("w") as out:
            self.proc = subprocess.Popen(
                cmd,
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_healthy(self, timeout_s: float = 600.0) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited with {self.proc.returncode}:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.base}/health", timeout=2.0).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"{self.label} not healthy after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def peak_rss_mib(self) -> float | None:
        return peak_rss_mib(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@contextmanager
def running(server: ServerProcess) -> Iterator[ServerProcess]:
    try:
        server.wait_healthy()
        yield server
    finally:
        server.stop()


# --- peers ------------------------------------------------------------------------------------


@dataclass
class Config:
    model: Path
    threads: int
    new_tokens: int
    levels: list[int]
    scenarios: list[str]
    requests_per_level: int
    short_tokens: int
    prefix_tokens: int
    log_dir: Path
    levant_home: Path
    levant_env: dict[str, str]
    transformers_repeats: int
    llama_args: list[str]

    def n_requests(self, concurrency: int) -> int:
        return self.requests_per_level or max(concurrency, 8)


@dataclass
class Workload:
    """Every prompt of one scenario, made once so that all servers get the same ones."""

    scenario: str
    levels: dict[int, list[list[dict[str, str]]]]
    warmup: list[dict[str, str]]
    probes: list[list[dict[str, str]]]  # prefix: cold, then cached


def make_workloads(cfg: Config, maker: PromptMaker) -> dict[str, Workload]:
    out: dict[str, Workload] = {}
    warmup = maker.short("warm-up", 32)
    if "short" in cfg.scenarios:
        levels = {
            c: [maker.short(f"short-c{c}-r{i}", cfg.short_tokens) for i in range(cfg.n_requests(c))]
            for c in cfg.levels
        }
        out["short"] = Workload("short", levels, warmup, [])
    if "prefix" in cfg.scenarios:
        doc = maker.prefix_document(cfg.prefix_tokens)
        levels = {
            c: [maker.with_question(doc, f"c{c}-r{i}") for i in range(cfg.n_requests(c))]
            for c in cfg.levels
        }
        probes = [maker.with_question(doc, "cold"), maker.with_question(doc, "cached")]
        out["prefix"] = Workload("prefix", levels, warmup, probes)
    for w in out.values():
        counts = [maker.count(m) for ms in w.levels.values() for m in ms]
        if counts:
            _log(f"{w.scenario}: prompts {min(counts)}-{max(counts)} tokens (tokenizer count)")
    return out


BodyFn = Callable[[list[dict[str, str]], int], dict[str, Any]]


def levant_body(messages: list[dict[str, str]], n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": messages,
        "max_tokens": n,
        "min_tokens": n,  # Levant has no ignore_eos; min_tokens suppresses EOS until n
        "temperature": 0.0,
        "stream": True,
    }


def llama_body(messages: list[dict[str, str]], n: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": messages,
        "max_tokens": n,
        "ignore_eos": True,
        "temperature": 0.0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "cache_prompt": True,
    }


def drive(
    server: ServerProcess, w: Workload, body: BodyFn, cfg: Config, levels: list[int]
) -> dict[str, Any]:
    """Warm-up, the prefix-cache probes (cold, then cached) and the given levels."""
    url = f"{server.base}/v1/chat/completions"

    def one(messages: list[dict[str, str]], n: int) -> RequestResult:
        _, [res] = asyncio.run(run_level(url, [body(messages, n)], 1))
        if not res.ok:
            raise RuntimeError(f"{server.label}: request failed: {res.error}")
        return res

    one(w.warmup, min(cfg.new_tokens, 8))
    out: dict[str, Any] = {"levels": []}
    if w.probes:
        cold, cached = (one(m, cfg.new_tokens) for m in w.probes)
        out["probes"] = {
            name: {
                "ttft_s": r.ttft_s,
                "prompt_tokens": r.prompt_tokens,
                "cached_tokens": r.cached_tokens,
            }
            for name, r in (("cold", cold), ("cached", cached))
        }
        _log(
            f"  {server.label} {w.scenario}: cold TTFT {cold.ttft_s:.3f} s "
            f"(cached {cold.cached_tokens}), cached TTFT {cached.ttft_s:.3f} s "
            f"(cached {cached.cached_tokens} of {cached.prompt_tokens})"
        )
    for c in levels:
        bodies = [body(m, cfg.new_tokens) for m in w.levels[c]]
        wall, results = asyncio.run(run_level(url, bodies, c))
        row = summarise(wall, results, cfg.new_tokens, c)
        row["peak_rss_mib"] = server.peak_rss_mib()
        out["levels"].append(row)
        _log(
            f"  {server.label} {w.scenario} c={c}: {_f(row['output_tok_s'], 1)} tok/s, "
            f"TTFT p50 {_f(row['ttft_p50_s'], 3)} s, {row['failed']} failed, {wall:.1f} s"
        )
    return out


def run_levant(cfg: Config, spec: str, workloads: dict[str, Workload]) -> dict[str, Any]:
    """``spec``: a LEVANT_DTYPE, ``+compile`` for LEVANT_COMPILE=1 (e.g. ``int4+compile``)."""
    label = f"levant {spec}"
    dtype, _, extra = spec.partition("+")
    env = {
        "LEVANT_HOME": str(cfg.levant_home),
        "LEVANT_AUTH": "0",
        "LEVANT_THREADS": str(cfg.threads),
        "LEVANT_DTYPE": dtype,
        "LEVANT_COMPILE": "1" if extra == "compile" else "0",
        "LEVANT_DEFAULT_MODEL": MODEL,
        **cfg.levant_env,
    }
    levant = shutil.which("levant", path=str(Path(sys.executable).parent)) or "levant"
    out: dict[str, Any] = {"server": label, "env": env, "scenarios": {}}
    for name, w in workloads.items():  # a fresh process (cold caches, own peak RSS) per scenario
        port = free_port()
        cmd = [levant, "serve", "--port", str(port), "--model", MODEL]
        server = ServerProcess(label, cmd, env, port, cfg.log_dir)
        out["cmd"] = cmd
        with running(server):
            out["scenarios"][name] = drive(server, w, levant_body, cfg, cfg.levels)
    return out


def llama_slot_ctx(w: Workload, maker: PromptMaker, new_tokens: int) -> int:
    longest = max(maker.count(m) for ms in w.levels.values() for m in [*ms, *w.probes])
    return -(-(int(longest * 1.1) + new_tokens + 64) // 256) * 256


def run_llama(
    cfg: Config, binary: Path, workloads: dict[str, Workload], maker: PromptMaker
) -> dict[str, Any]:
    label = "llama-server"
    out: dict[str, Any] = {"server": label, "scenarios": {}}
    for name, w in workloads.items():
        slot_ctx = llama_slot_ctx(w, maker, cfg.new_tokens)
        merged: dict[str, Any] = {"levels": [], "slot_ctx": slot_ctx, "cmds": []}
        for c in cfg.levels:  # --parallel must equal the concurrency: one process per level
            port = free_port()
            cmd = [
                str(binary), "-m", str(cfg.model), "--host", "127.0.0.1", "--port", str(port),
                "-t", str(cfg.threads), "-tb", str(cfg.threads), "--parallel", str(c),
                "-c", str(slot_ctx * c), "--no-webui", "--alias", MODEL, *cfg.llama_args,
            ]  # fmt: skip
            merged["cmds"].append(cmd)
            server = ServerProcess(label, cmd, {}, port, cfg.log_dir)
            with running(server):
                part = drive(server, w, llama_body, cfg, [c])
            merged["levels"] += part["levels"]
            merged.setdefault("probes", part.get("probes"))  # first level's: a fresh process
            merged.setdefault("probes_per_level", []).append(part.get("probes"))
        out["scenarios"][name] = merged
    return out


def run_transformers(cfg: Config, workloads: dict[str, Workload]) -> dict[str, Any]:
    """Single stream, fp32 ``generate`` in a child process (so its peak RSS is its own)."""
    job = {
        "model": str(cfg.model),
        "threads": cfg.threads,
        "new_tokens": cfg.new_tokens,
        "repeats": cfg.transformers_repeats,
        "prompts": {name: w.levels[min(w.levels)][0] for name, w in workloads.items()},
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(job, f)
    log = cfg.log_dir / "transformers.log"
    with log.open("w") as err:
        proc = subprocess.run(
            [sys.executable, "-m", "bench.serving", "--transformers-worker", f.name],
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            cwd=ROOT,
            env={**os.environ, "OMP_NUM_THREADS": str(cfg.threads)},
            check=False,
        )
    os.unlink(f.name)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise RuntimeError(f"transformers worker exited {proc.returncode}:\n{tail}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def transformers_worker(job_path: str) -> None:
    import torch
    import transformers
    from transformers import AutoTokenizer

    from bench.decode import transformers_from_gguf

    job = json.loads(Path(job_path).read_text())
    torch.set_num_threads(job["threads"])
    path, n = Path(job["model"]), job["new_tokens"]
    model = transformers_from_gguf(path, torch.float32)
    tok: Any = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    scenarios: dict[str, Any] = {}
    with torch.inference_mode():
        for name, messages in job["prompts"].items():
            ids = tok.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=True
            )["input_ids"]
            tokens = torch.tensor([ids])

            def generate(new: int, tokens: torch.Tensor = tokens) -> float:
                t0 = time.perf_counter()
                model.generate(tokens, max_new_tokens=new, min_new_tokens=new, do_sample=False)
                return time.perf_counter() - t0

            generate(2)  # warm-up
            samples = []
            for _ in range(job["repeats"]):
                first = generate(1)
                samples.append((first, generate(n + 1) - first))
            prefill = statistics.median(s[0] for s in samples)
            decode = statistics.median(s[1] for s in samples)
            scenarios[name] = {
                "prompt_tokens": len(ids),
                "prefill_s": prefill,
                "decode_s": decode,
                "prefill_tok_s": len(ids) / prefill,
                "decode_tok_s": n / decode,
                "samples": samples,
            }
    print(
        json.dumps(
            {
                "server": f"transformers {transformers.__version__} generate",
                "torch": torch.__version__,
                "threads": torch.get_num_threads(),
                "peak_rss_mib": peak_rss_mib(os.getpid()),
                "scenarios": scenarios,
            }
        )
    )


# --- report -----------------------------------------------------------------------------------


def _f(v: float | None, digits: int, scale: float = 1.0) -> str:
    return "-" if v is None else f"{v * scale:.{digits}f}"


HEADER = (
    "| server | concurrency | TTFT p50 (s) | TTFT p99 (s) | ITL p50 (ms) | out tok/s aggregate "
    "| tok/s per stream | req/s | peak RSS MiB |\n"
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
)


def tables(run: dict[str, Any]) -> str:
    lines: list[str] = []
    titles = {
        "short": f"(a) ~{run['short_prompt_tokens']}-token prompts, distinct",
        "prefix": f"(b) ~{run['prefix_prompt_tokens']}-token prompts sharing a common prefix",
    }
    for scenario in run["scenarios"]:
        lines += [f"\n#### {titles[scenario]}, {run['new_tokens']} new tokens\n", HEADER]
        notes: list[str] = []
        for peer in run["results"]:
            data = peer.get("scenarios", {}).get(scenario)
            if data is None:
                continue
            if "decode_tok_s" in data:  # transformers: single stream, in-process
                lines.append(
                    f"| {peer['server']} | 1 | {_f(data['prefill_s'], 3)} | - | "
                    f"{_f(data['decode_s'] / run['new_tokens'], 1, 1e3)} | "
                    f"{_f(data['decode_tok_s'], 1)} | {_f(data['decode_tok_s'], 1)} | "
                    f"{_f(1 / (data['prefill_s'] + data['decode_s']), 2)} | "
                    f"{_f(peer['peak_rss_mib'], 0)} |"
                )
                notes.append(
                    f"{peer['server']}: prompt {data['prompt_tokens']} tokens, prefill "
                    f"{data['prefill_tok_s']:.0f} tok/s, decode {data['decode_tok_s']:.1f} tok/s"
                    " (TTFT column = prefill time; no HTTP)"
                )
                continue
            for row in data["levels"]:
                failed = f" ({row['failed']} failed)" if row["failed"] else ""
                lines.append(
                    f"| {peer['server']}{failed} | {row['concurrency']} | "
                    f"{_f(row['ttft_p50_s'], 3)} | {_f(row['ttft_p99_s'], 3)} | "
                    f"{_f(row['itl_p50_s'], 1, 1e3)} | {_f(row['output_tok_s'], 1)} | "
                    f"{_f(row['per_stream_tok_s'], 1)} | {_f(row['req_s'], 2)} | "
                    f"{_f(row['peak_rss_mib'], 0)} |"
                )
            prompt = next(
                (r["prompt_tokens_median"] for r in data["levels"] if r["prompt_tokens_median"]),
                None,
            )
            cached = ", ".join(_f(r["cached_tokens_median"], 0) for r in data["levels"])
            note = f"{peer['server']}: prompt {_f(prompt, 0)} tokens (usage)"
            if scenario == "prefix":
                note += f", median cached tokens per level: {cached}"
            if probes := data.get("probes"):
                c, w = probes["cold"], probes["cached"]
                note += (
                    f"; cold TTFT {_f(c['ttft_s'], 3)} s, TTFT with the prefix cached "
                    f"{_f(w['ttft_s'], 3)} s ({w['cached_tokens']} of {w['prompt_tokens']} "
                    "tokens cached)"
                )
            notes.append(note)
        lines.append("")
        lines += [f"- {n}" for n in notes]
    for peer in run["failures"]:
        lines.append(f"- {peer['server']}: FAILED: {peer['error'].splitlines()[0]}")
    return "\n".join(lines)


def report(run: dict[str, Any]) -> str:
    m, v = run["machine"], run["versions"]
    head = [
        f"### HTTP serving, {run['timestamp'][:10]}{' (--quick)' if run['quick'] else ''}",
        "",
        f"- machine: {m['cpu']}, {m['cpus']} CPUs, {m['platform']}",
        f"- model: {run['model_name']} ({run['model_file_type']}), the same GGUF for every "
        f"server; {run['threads']} threads each; greedy; every request generates exactly "
        f"{run['new_tokens']} tokens (Levant min_tokens, llama-server ignore_eos)",
        f"- versions: levant {v['levant']} ({v['git']}), torch {v['torch']}, transformers "
        f"{v['transformers']}, llama-server {v['llama_server']} (from llama-cpp-python "
        f"{LLAMA_CPP_PYTHON} sdist)",
        f"- requests per level: {run['requests_per_level']}; Levant with LEVANT_AUTH=0; "
        "llama-server restarted per level with --parallel = concurrency; peak RSS = VmHWM "
        "of the server process tree",
    ]
    return "\n".join(head) + "\n" + tables(run)


def _git() -> str:
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except OSError:
        return "unknown"


def _cpu() -> str:
    """The CPU's name and the vector extensions the kernels care about (two VMs both named
    "AMD EPYC" here ran very different code: AVX-512 VNNI on one, AVX2 on the other)."""
    name, flags = platform.processor() or "unknown", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    wanted = ["avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile"]
    isa = [f for f in wanted if f in flags]
    return f"{name} ({', '.join(isa)})" if isa else name


def _model_info(path: Path) -> tuple[str, str]:
    try:
        import gguf

        reader = gguf.GGUFReader(path)
        ft = reader.fields["general.file_type"]
        name = reader.fields["general.name"]
        return (
            bytes(name.parts[-1]).decode(),
            gguf.LlamaFileType(int(ft.parts[ft.data[0]][0])).name,
        )
    except Exception:
        return path.name, "unknown"


def _versions(llama: Path | None) -> dict[str, str]:
    import importlib.metadata as md

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    llama_version = "not built"
    if llama is not None:
        out = subprocess.run([str(llama), "--version"], capture_output=True, text=True)
        lines = [ln for ln in (out.stdout + out.stderr).splitlines() if "version" in ln]
        llama_version = lines[0].split(":", 1)[-1].strip() if lines else "unknown"
    return {
        "levant": version("levant"),
        "git": _git(),
        "torch": version("torch"),
        "transformers": version("transformers"),
        "httpx": httpx.__version__,
        "python": platform.python_version(),
        "llama_server": llama_version,
    }


def _find_model(explicit: Path | None) -> Path:
    """bench.decode's lookup (--model, LEVANT_HOME, LEVANT_TEST_HOME), then .levant-test."""
    local = ROOT / ".levant-test" / "models" / MODEL / "model.gguf"
    try:
        return find_model(explicit).resolve()
    except SystemExit:
        if explicit is None and local.is_file():
            return local.resolve()
        raise


@contextmanager
def levant_home(explicit: Path | None, model: Path) -> Iterator[Path]:
    """The given home, or a throwaway one whose store links to the model's directory."""
    if explicit is not None:
        yield explicit
        return
    if not (model.parent / "manifest.json").is_file():
        raise SystemExit(f"{model} is not in a Levant store (no manifest.json); pass --levant-home")
    with tempfile.TemporaryDirectory(prefix="levant-bench-home-") as tmp:
        (Path(tmp) / "models").mkdir()
        (Path(tmp) / "models" / MODEL).symlink_to(model.parent.resolve())
        yield Path(tmp)


# --- main -------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,16,64")
    parser.add_argument("--scenarios", default="short,prefix", help="short,prefix")
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--servers", default="levant,llama,transformers")
    parser.add_argument(
        "--levant-dtype",
        default="float32",
        help="comma list: one Levant run per dtype; DTYPE+compile sets LEVANT_COMPILE=1",
    )
    parser.add_argument(
        "--requests-per-level",
        type=int,
        default=0,
        help="requests per concurrency level (default 0: max(concurrency, 8))",
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for every server")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="run the servers this many times in turn (levant, llama, ..., levant, llama, "
        "...): on a shared VM whose speed drifts by minutes, compare within a round",
    )
    parser.add_argument("--short-prompt-tokens", type=int, default=100)
    parser.add_argument("--prefix-prompt-tokens", type=int, default=1000)
    parser.add_argument("--transformers-repeats", type=int, default=3)
    parser.add_argument("--model", type=Path, default=None, help="path to the SmolLM2 GGUF")
    parser.add_argument("--levant-home", type=Path, default=None, help="default: a temp home")
    parser.add_argument("--levant-kv-cache-gb", type=float, default=None)
    parser.add_argument("--levant-max-batched-tokens", type=int, default=None)
    parser.add_argument("--llama-server", type=Path, default=None, help="skip the build")
    parser.add_argument(
        "--llama-args",
        default=LLAMA_ARGS,
        help=f"extra llama-server arguments, as --llama-args='...' (default {LLAMA_ARGS!r}, "
        "see the module docstring; --llama-args= re-enables AMX)",
    )
    parser.add_argument("--out", type=Path, default=None, help="raw JSON (appended run)")
    parser.add_argument("--markdown", type=Path, default=None, help="append the report here")
    parser.add_argument("--quick", action="store_true", help="smoke test: c=1,2, 8 tokens, 2 req")
    parser.add_argument("--transformers-worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.transformers_worker:
        transformers_worker(args.transformers_worker)
        return
    if args.quick:
        args.concurrency, args.new_tokens, args.requests_per_level = "1,2", 8, 2
        args.transformers_repeats = 1
    servers = args.servers.split(",")
    scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(scenarios) - {"short", "prefix"}:
        raise SystemExit(f"unknown scenarios {unknown}")
    if unknown := set(servers) - {"levant", "llama", "transformers"}:
        raise SystemExit(f"unknown servers {unknown}")
    model = _find_model(args.model)
    levant_env = {
        k: str(v)
        for k, v in (
            ("LEVANT_KV_CACHE_GB", args.levant_kv_cache_gb),
            ("LEVANT_MAX_BATCHED_TOKENS", args.levant_max_batched_tokens),
        )
        if v is not None
    }
    failures: list[dict[str, Any]] = []
    llama_bin: Path | None = args.llama_server
    llama_info: dict[str, Any] = {"binary": str(llama_bin)} if llama_bin else {}
    if "llama" in servers and llama_bin is None:
        llama_bin, llama_info = build_llama_server()
        if llama_bin is None:
            failures.append({"server": "llama-server", "error": llama_info["error"]})

    t_start = time.perf_counter()
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="levant-bench-logs-") as logs,
        levant_home(args.levant_home, model) as home,
    ):
        cfg = Config(
            model=model,
            threads=args.threads,
            new_tokens=args.new_tokens,
            levels=[int(c) for c in args.concurrency.split(",")],
            scenarios=scenarios,
            requests_per_level=args.requests_per_level,
            short_tokens=args.short_prompt_tokens,
            prefix_tokens=args.prefix_prompt_tokens,
            log_dir=Path(logs),
            levant_home=home,
            levant_env=levant_env,
            transformers_repeats=args.transformers_repeats,
            llama_args=shlex.split(args.llama_args),
        )
        maker = PromptMaker(model)
        workloads = make_workloads(cfg, maker)
        jobs: list[tuple[str, Callable[[], dict[str, Any]]]] = []
        if "levant" in servers:
            for dtype in args.levant_dtype.split(","):
                jobs.append((f"levant {dtype}", partial(run_levant, cfg, dtype, workloads)))
        if "llama" in servers and llama_bin is not None:
            binary = llama_bin
            jobs.append(("llama-server", lambda: run_llama(cfg, binary, workloads, maker)))
        if "transformers" in servers:
            jobs.append(("transformers", lambda: run_transformers(cfg, workloads)))
        rounds = [(k, label, job) for k in range(1, args.rounds + 1) for label, job in jobs]
        for k, label, job in rounds:  # one server at a time: never two on the same cores
            if args.rounds > 1:
                label = f"{label} (round {k})"
            load = os.getloadavg()
            _log(f"== {label} (load average {load[0]:.1f})")
            if load[0] > 1.0:  # llama.cpp's spinning threads suffer most from a busy machine
                _log(f"!! machine not quiet (load average {load[0]:.1f}): numbers will be off")
            t0 = time.perf_counter()
            try:
                result = job()
            except Exception as exc:  # recorded; the other peers still run
                _log(f"!! {label} FAILED: {exc}")
                failures.append({"server": label, "error": f"{type(exc).__name__}: {exc}"})
                continue
            result["elapsed_s"] = time.perf_counter() - t0
            result["load_average_at_start"] = load
            if args.rounds > 1:
                result["round"] = k
                result["server"] = f"{result['server']} (round {k})"
            results.append(result)

    now = datetime.now(UTC)
    name, file_type = _model_info(model)
    run: dict[str, Any] = {
        "timestamp": now.isoformat(),
        "quick": args.quick,
        "model": str(model),
        "model_name": name,
        "model_file_type": file_type,
        "threads": args.threads,
        "new_tokens": args.new_tokens,
        "concurrency": cfg.levels,
        "scenarios": scenarios,
        "requests_per_level": args.requests_per_level or "max(concurrency, 8)",
        "short_prompt_tokens": args.short_prompt_tokens,
        "prefix_prompt_tokens": args.prefix_prompt_tokens,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "cpu": _cpu()},
        "versions": _versions(llama_bin),
        "llama_server_build": llama_info,
        "llama_server_args": cfg.llama_args,
        "levant_auth": "off (LEVANT_AUTH=0)",
        "elapsed_s": time.perf_counter() - t_start,
        "results": results,
        "failures": failures,
    }
    text = report(run)
    print("\n" + text)
    out = args.out or RESULTS / f"serving-{now:%Y-%m-%d}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    runs = json.loads(out.read_text())["runs"] if out.is_file() else []
    out.write_text(json.dumps({"runs": [*runs, run]}, indent=2) + "\n")
    print(f"\nraw results: {out}")
    if args.markdown:
        with args.markdown.open("a") as md:
            md.write("\n" + text + "\n")
        print(f"report appended to {args.markdown}")


if __name__ == "__main__":
    main()
