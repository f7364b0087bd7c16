"""A ``torch.compile``'d forward for decode steps: every scheduled sequence decodes one token.

Boundary: R token ids, their positions and a ``DecodeAttention`` in, final hidden states
out; the runner decides which steps qualify (all decodes, at most ``max_rows`` of them)
and runs everything else (prefill chunks, mixed steps) eagerly. Inductor fuses each
layer's pointwise work (norms, rotary, residuals, SwiGLU, casts) into a few C++ kernels
and calls the matmuls (oneDNN, ``levant::q4_matmul``, PyTorch's int8/int4 kernels) and
``levant::paged_decode_attention`` directly, so the ~130 small operators per layer that
dominate an eager step of a small model on a CPU are paid once per step: 16 sequences of
SmolLM2-135M int4, 47 ms eager, 29 ms compiled per step here.

Shapes: one graph for a single sequence, one with a dynamic number of sequences and
context length, and one more for each row count at which a quantized layer switches from
its quantized kernel to its dense copy (``dense_above``: dynamo guards on it). ``warm_up``
compiles them all before the first request (tens of seconds each on two cores; Inductor's
on-disk cache makes later start-ups faster).
"""

from __future__ import annotations

import logging
import time
import types
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
import torch.fx.experimental._config as fx_config

from levant.models.paged_attention import DecodeAttention, PagedKVCache
from levant.models.quantize import quantized_layers
from levant.models.transformer import Transformer

log = logging.getLogger(__name__)

# Sizes that happen to be equal while tracing (a warm-up's row count and the 2 of bounds'
# (R, 2)) must not be assumed equal forever: each would be a recompile mid-request.
fx_config.use_duck_shape = False

Forward = Callable[[torch.Tensor, torch.Tensor, DecodeAttention], torch.Tensor]


def own_forward(model: Transformer) -> Forward:
    """``model.hidden_states`` on a copy of its code object. Dynamo keeps compiled graphs
    (and its recompile limit) per code object: with a copy of its own, each model's graphs
    are its alone, whatever other model the process loads."""
    fn = Transformer.hidden_states
    own = types.FunctionType(fn.__code__.replace(), fn.__globals__, fn.__name__)
    return cast(Forward, types.MethodType(own, model))


def _keep_guard(entries: Sequence[Any]) -> list[bool]:
    """Dynamo's guard filter: skip the guards on the model's modules (the shape, stride
    and dtype of every weight, every layer's attributes: ~0.6 ms of a 6 ms single-sequence
    step of SmolLM2 on two cores) and keep the rest (the inputs, ``attend``, globals, the
    row-count guards of the kernel switches). Sound because the graphs are this model's
    alone (``own_forward``) and nothing changes a loaded model after ``warm_up``
    (``dense_above`` is tuned before it)."""
    return [not e.orig_guard.source.is_unspecialized_nn_module() for e in entries]


class CompiledDecode:
    def __init__(self, model: Transformer, max_rows: int = 64) -> None:
        self.model = model
        self.max_rows = max_rows
        self._forward: Forward = torch.compile(
            own_forward(model), dynamic=True, options={"guard_filter_fn": _keep_guard}
        )

    def __call__(
        self, tokens: torch.Tensor, positions: torch.Tensor, attend: DecodeAttention
    ) -> torch.Tensor:
        """tokens and positions (R,) -> final-normed hidden states (1, R, dim)."""
        if tokens.dim() != 1 or not 1 <= tokens.shape[0] <= self.max_rows:
            raise ValueError(f"the compiled step decodes 1 to {self.max_rows} sequences")
        return self._forward(tokens[None], positions, attend)

    def warm_up_rows(self) -> list[int]:
        """The row counts that give every graph: 1, 2, and one past each kernel switch."""
        switches = {layer.dense_above + 1 for layer in quantized_layers(self.model)}
        return sorted({1, 2, *(r for r in switches if 2 < r <= self.max_rows)})

    @torch.inference_mode()
    def warm_up(self, cache: PagedKVCache) -> None:
        """Compile each graph, the sequences attending over block 0 (its slots hold nothing
        yet, and any request that gets the block writes each slot before it reads it)."""
        t0 = time.monotonic()
        device = cache.kv[0].device
        rows = self.warm_up_rows()
        for r in rows:
            # Three blocks per sequence: a size of 1 would be specialized (dynamo's 0/1
            # rule) and the first longer context would compile again, mid-request.
            zeros = torch.zeros(r, dtype=torch.long, device=device)
            blocks = torch.zeros(3 * r, dtype=torch.long, device=device)
            mask = torch.zeros(r, 1, 1, 3 * cache.block_size, dtype=torch.bool, device=device)
            mask[..., 0] = True
            bounds = torch.tensor([[0, 1]] * r, device=device)
            attend = DecodeAttention(cache, zeros.clone(), blocks, mask, bounds)
            self(zeros, zeros.clone(), attend)
        log.info("compiled the decode step for %s sequences in %.0f s", rows, time.monotonic() - t0)
