"""In-process timings of the engine's CPU step pieces on SmolLM2-135M int4, each beside the
path it replaces, in the same process: the prefill attention kernel against gather + SDPA,
a cold prefill through the engine with the fused step against the layer-by-layer forward,
the fused step at 1 and 16 decoding sequences, and, where the CPU has AMX, the int8
head's matmul on its AMX path against its VNNI path, beside one block's int4 matmuls and
their dense bf16 copies through oneDNN (AMX's bf16 tiles), by row count. Prints a
markdown table; the comparison with named peers (llama-server, transformers) is
``python -m bench.serving``.

    python -m bench.kernels [--threads 2] [--prompt 1004] [--repeats 4]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from bench.decode import find_model
from bench.engine import build
from levant import kernels
from levant.engine.core import LLMEngine
from levant.engine.fused_step import FusedStep
from levant.engine.protocol import EngineRequest, SamplingParams
from levant.models.dense_linear import PackedBF16
from levant.models.paged_attention import PagedKVCache, SequenceChunk, attend_group, gather_blocks
from levant.models.quantize import Int8Linear, quantized_layers
from levant.models.transformer import Transformer


def best_ms(f: Callable[[], object], repeats: int) -> float:
    """The fastest of ``repeats`` calls (the least disturbed by the rest of the machine)."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def prefill_attention(repeats: int) -> list[tuple[str, float, float]]:
    """One layer's attention for a 1,024-token prompt in chunks of 256 over a bf16 cache
    (SmolLM2's heads: 9 query, 3 kv, 64 wide): gather + SDPA with a mask, then the kernel."""
    bs, kv_heads, heads, hd, chunk = 16, 3, 9, 64, 256
    cache = torch.randn(64 * bs, 2 * kv_heads, hd).to(torch.bfloat16)
    table = torch.arange(64)
    rows = []
    for cached in (256, 512, 768):
        q = torch.randn(chunk, heads, hd)
        end = cached + chunk
        blocks = table[: -(-end // bs)]
        q_pos = torch.arange(cached, end)[:, None]
        mask = (torch.arange(blocks.numel() * bs)[None, :] <= q_pos)[None, None]

        def sdpa(
            q: torch.Tensor = q, blocks: torch.Tensor = blocks, mask: torch.Tensor = mask
        ) -> None:
            kvg = gather_blocks(cache, blocks, bs, 1)
            attend_group(q.view(1, chunk, heads, hd).to(torch.bfloat16), kvg, mask)

        def kernel(q: torch.Tensor = q, cached: int = cached) -> None:
            torch.ops.levant.paged_prefill_attention(q, cache, table, cached, 0, bs, hd**-0.5)

        rows.append(
            (f"chunk after {cached} positions", best_ms(sdpa, repeats), best_ms(kernel, repeats))
        )
    return rows


def cold_prefill(model: Transformer, n: int, repeats: int) -> tuple[float, float]:
    """Median seconds to the first token of an n-token prompt (no prefix cache), with the
    fused step and layer by layer, alternating."""
    engines = {
        fused: LLMEngine(
            model,
            model.config,
            dtype=torch.bfloat16,
            kv_cache_bytes=256 << 20,
            enable_prefix_caching=False,
            fused_step=fused,
        )
        for fused in (True, False)
    }
    g = torch.Generator().manual_seed(0)
    times: dict[bool, list[float]] = {True: [], False: []}
    for i in range(repeats + 1):
        for fused, engine in engines.items():
            prompt = torch.randint(0, model.config.vocab_size, (n,), generator=g).tolist()
            params = SamplingParams(temperature=0.0, max_tokens=1)
            t0 = time.perf_counter()
            list(engine.generate(EngineRequest(f"p{i}-{fused}", prompt, params)))
            if i:  # the first: warm-up
                times[fused].append(time.perf_counter() - t0)
    return statistics.median(times[True]), statistics.median(times[False])


def fused_decode_ms(fused: FusedStep, model: Transformer, rows: int, repeats: int) -> float:
    """One fused step of ``rows`` sequences decoding at position 170 (blocks in order)."""
    bs, ctx = 16, 170
    per = ctx // bs + 2
    cache = PagedKVCache.allocate(model.config, rows * per, bs, torch.bfloat16, torch.device("cpu"))
    for kv in cache.kv:
        kv.normal_()
    chunks = [SequenceChunk(i, 1, ctx, list(range(i * per, (i + 1) * per))) for i in range(rows)]
    tokens = torch.randint(0, model.config.vocab_size, (rows,))
    positions = torch.full((rows,), ctx)
    with torch.inference_mode():
        return best_ms(lambda: fused(tokens, positions, chunks, cache), repeats)


Timings = tuple[int, float, float, float, float]


def amx_matmuls(model: Transformer, repeats: int) -> list[Timings]:
    """Per row count: one block's four int4 matmuls and their dense bf16 copies through
    oneDNN, and the int8 head on its VNNI and AMX paths, in ms, alternating twice."""
    block = quantized_layers(model.layers)[:4]
    head = model.output
    assert isinstance(head, Int8Linear) and head.q8_packed is not None
    dense = [PackedBF16(m.dequantized()) for m in block]
    op = torch.ops.levant

    def at(rows: int) -> Timings:
        xs = [torch.randn(rows, m.in_features) for m in block]
        pairs = list(zip(block, xs, strict=True))
        bf16 = list(zip(dense, [x.to(torch.bfloat16) for x in xs], strict=True))
        xh = torch.randn(rows, head.in_features)
        t: dict[str, list[float]] = {k: [] for k in ("q", "d", "hv", "ha")}
        for _ in range(2):
            t["q"].append(best_ms(lambda: [m._quantized_mm(x) for m, x in pairs], repeats))
            t["d"].append(best_ms(lambda: [d(x) for d, x in bf16], repeats))
            for amx, key in ((False, "hv"), (True, "ha")):
                op.set_amx(amx)
                t[key].append(best_ms(lambda: head._quantized_mm(xh), repeats))
        q, d, hv, ha = (min(t[k]) for k in ("q", "d", "hv", "ha"))
        return rows, q, d, hv, ha

    previous = op.set_amx(True)
    try:
        with torch.inference_mode():
            return [at(rows) for rows in (8, 16, 32, 64, 256)]
    finally:
        op.set_amx(previous)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompt", type=int, default=1004, help="cold prefill prompt tokens")
    parser.add_argument("--repeats", type=int, default=4, help="cold prefills per path")
    parser.add_argument("--model", type=Path, default=None, help="path to the SmolLM2 GGUF")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if not kernels.q4_ready():
        raise SystemExit("Levant's kernels need AVX2 or AVX-512 VNNI and a C++ compiler")
    model, _ = build(find_model(args.model), "int4")
    for layer in quantized_layers(model):
        layer.dense = None  # the quantized kernels at every size, as tuning chooses on AVX-512
    fused = FusedStep.of(model)
    assert fused is not None

    print(f"\nSmolLM2-135M int4, {torch.get_num_threads()} threads\n")
    print("| piece | replaced path | Levant | ratio |")
    print("| --- | ---: | ---: | ---: |")
    for label, plain, ours in prefill_attention(repeats=20):
        print(
            f"| prefill attention, {label} | {plain:.2f} ms | {ours:.2f} ms | {plain / ours:.2f}x |"
        )
    with_fused, layer_by_layer = cold_prefill(model, args.prompt, args.repeats)
    print(
        f"| cold prefill, {args.prompt} tokens (median) | {layer_by_layer:.3f} s | "
        f"{with_fused:.3f} s | {layer_by_layer / with_fused:.2f}x |"
    )
    for rows in (1, 16):
        ms = fused_decode_ms(fused, model, rows, repeats=40)
        print(f"| fused decode step, {rows} sequences at 170 positions | - | {ms:.2f} ms | - |")
    if torch.ops.levant.amx_available():
        print("\nOne block's int4 matmuls and the int8 head by rows (best of 20)\n")
        print("| rows | int4 (levant::q4_matmul) | dense bf16 (oneDNN) | head VNNI | head AMX |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        for rows, q, d, hv, ha in amx_matmuls(model, repeats=20):
            print(f"| {rows} | {q:.3f} ms | {d:.3f} ms | {hv:.3f} ms | {ha:.3f} ms |")


if __name__ == "__main__":
    main()
