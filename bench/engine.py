"""In-process throughput of the serving engine on SmolLM2-135M: 1, 4, 16 concurrent streams.

Every stream gets its own ~100-token prompt (no shared prefix) and must produce exactly
``--new-tokens`` tokens (EOS ignored). All streams arrive at once; the engine's step loop
runs them with continuous batching. Reports aggregate and per-stream output tok/s, prefill
tok/s and time to first token, per weight format (float32, bfloat16, int8 weight-only).
This is Levant's engine alone, in process (no HTTP): the comparison with named peers
(llama.cpp's llama-server, transformers), measured in the same run on the same machine,
is ``python -m bench.serving``. Prints a markdown table and writes JSON to bench/results/.

    python -m bench.engine [--dtypes float32,int8] [--concurrency 1,4,16] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from bench.decode import find_model
from levant.engine.core import LLMEngine
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models.loaders import load_checkpoint
from levant.models.quantize import quantize_int4, quantize_int8
from levant.models.transformer import Transformer, build_model

RESULTS = Path(__file__).resolve().parent / "results"


def build(path: Path, fmt: str) -> tuple[Transformer, torch.dtype]:
    config, weights = load_checkpoint(path)
    # The second value is the KV cache's dtype: bf16 under quantized weights, as the server's
    # kv_cache_dtype=auto.
    if fmt == "int8":  # int8 weights, float32 activations
        return quantize_int8(build_model(config, weights)), torch.bfloat16
    if fmt == "int4":  # int4 block weights (int8 head), float32 activations
        return quantize_int4(build_model(config, weights)), torch.bfloat16
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[fmt]
    return build_model(config, weights, dtype=dtype), dtype


def run_streams(
    engine: LLMEngine, concurrency: int, prompt_tokens: int, new_tokens: int, seed: int
) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    vocab = engine.config.vocab_size
    params = SamplingParams(temperature=0.0, max_tokens=new_tokens, ignore_eos=True)
    t0 = time.perf_counter()
    for i in range(concurrency):
        prompt = torch.randint(0, vocab, (prompt_tokens,), generator=g).tolist()
        engine.add_request(EngineRequest(f"s{seed}-{i}", prompt, params))
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    produced: dict[str, int] = {}
    while engine.has_unfinished_requests():
        outs = engine.step()
        now = time.perf_counter()
        for o in outs:
            first.setdefault(o.request_id, now)
            last[o.request_id] = now
            produced[o.request_id] = produced.get(o.request_id, 0) + len(o.new_token_ids)
    wall = time.perf_counter() - t0
    assert all(n == new_tokens for n in produced.values()) and len(produced) == concurrency
    per_stream = [(new_tokens - 1) / (last[r] - first[r]) for r in first]
    return {
        "wall_s": wall,
        "aggregate_tok_s": concurrency * new_tokens / wall,
        "per_stream_tok_s": statistics.median(per_stream),
        "ttft_s": statistics.median(t - t0 for t in first.values()),
        "prefill_tok_s": concurrency * prompt_tokens / (max(first.values()) - t0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", default="float32,bfloat16,int8")
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--prompt-tokens", type=int, default=100)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="median over repeats")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    parser.add_argument("--max-batched-tokens", type=int, default=512)
    parser.add_argument("--model", type=Path, default=None, help="path to the SmolLM2 GGUF")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    path = find_model(args.model)
    levels = [int(c) for c in args.concurrency.split(",")]

    rows: list[dict[str, Any]] = []
    for fmt in args.dtypes.split(","):
        model, dtype = build(path, fmt)
        engine = LLMEngine(
            model,
            model.config,
            dtype=dtype,
            model_id="smollm2",
            kv_cache_bytes=256 << 20,
            max_num_batched_tokens=args.max_batched_tokens,
        )
        engine.warm_up()  # kernel choice by row count, as the server makes it
        run_streams(engine, 2, 16, 4, seed=0)  # warm-up
        for c in levels:
            samples = [
                run_streams(engine, c, args.prompt_tokens, args.new_tokens, seed=1 + r)
                for r in range(args.repeats)
            ]
            row: dict[str, Any] = {"weights": fmt, "concurrency": c}
            for key in samples[0]:
                row[key] = statistics.median(s[key] for s in samples)
            row["samples"] = samples
            rows.append(row)
            print(f"{fmt} c={c}: {row['aggregate_tok_s']:.1f} tok/s aggregate", flush=True)

    print(
        f"\nSmolLM2-135M-Instruct ({path.name}), prompts {args.prompt_tokens} tokens, "
        f"{args.new_tokens} new tokens per stream, {torch.get_num_threads()} threads, "
        f"median of {args.repeats}\n"
    )
    print("| weights | streams | aggregate tok/s | per-stream tok/s | prefill tok/s | TTFT s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['weights']} | {r['concurrency']} | {r['aggregate_tok_s']:.1f} | "
            f"{r['per_stream_tok_s']:.1f} | {r['prefill_tok_s']:.1f} | {r['ttft_s']:.2f} |"
        )

    now = datetime.now(UTC)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"engine-{now:%Y-%m-%d}.json"
    run = {
        "timestamp": now.isoformat(),
        "model": str(path),
        "prompt_tokens": args.prompt_tokens,
        "new_tokens": args.new_tokens,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "max_batched_tokens": args.max_batched_tokens,
        "torch": torch.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "results": rows,
    }
    runs = json.loads(out.read_text())["runs"] if out.is_file() else []
    out.write_text(json.dumps({"runs": [*runs, run]}, indent=2) + "\n")
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
