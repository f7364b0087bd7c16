"""Dequantize ggml tensor blocks to float32 (vectorised numpy).

Boundary: raw GGUF tensor bytes + ggml type in, a float32 array out; nothing about
tensor names or model configs. Block layouts follow ggml's ``ggml-common.h``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import numpy.typing as npt
from gguf import GGMLQuantizationType as QType

U8Array = npt.NDArray[np.uint8]
F32Array = npt.NDArray[np.float32]

QK = 32
"""Elements per block for the legacy quant types (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0)."""


def _f16(raw: U8Array) -> F32Array:
    """(n_blocks, 2) bytes of little-endian float16 -> (n_blocks, 1) float32."""
    return np.ascontiguousarray(raw).view(np.float16).astype(np.float32)


def _nibbles(qs: U8Array) -> U8Array:
    """(n_blocks, 16) packed bytes -> (n_blocks, 32): low nibbles are elements 0..15,
    high nibbles 16..31."""
    return np.concatenate([qs & np.uint8(0x0F), qs >> np.uint8(4)], axis=-1)


def _high_bits(qh: U8Array) -> U8Array:
    """(n_blocks, 4) little-endian uint32 -> (n_blocks, 32) fifth bits, bit j is element j."""
    bits = np.ascontiguousarray(qh).view("<u4") >> np.arange(QK, dtype=np.uint32)
    return (bits & np.uint32(1)).astype(np.uint8)


def _q8_0(blocks: U8Array) -> F32Array:
    # f16 scale d, 32 x int8 q; x = d * q
    d, qs = _f16(blocks[:, :2]), np.ascontiguousarray(blocks[:, 2:]).view(np.int8)
    return d * qs.astype(np.float32)


def _q4_0(blocks: U8Array) -> F32Array:
    # f16 d, 16 bytes of nibbles; x = (q - 8) * d
    d, q = _f16(blocks[:, :2]), _nibbles(blocks[:, 2:]).astype(np.int8) - np.int8(8)
    return d * q.astype(np.float32)


def _q4_1(blocks: U8Array) -> F32Array:
    # f16 d, f16 m, 16 bytes of nibbles; x = q * d + m
    d, m, q = _f16(blocks[:, :2]), _f16(blocks[:, 2:4]), _nibbles(blocks[:, 4:])
    return d * q.astype(np.float32) + m


def _q5_0(blocks: U8Array) -> F32Array:
    # f16 d, 4 bytes of fifth bits, 16 bytes of nibbles; x = (q - 16) * d
    d = _f16(blocks[:, :2])
    q = _nibbles(blocks[:, 6:]) | (_high_bits(blocks[:, 2:6]) << np.uint8(4))
    return d * (q.astype(np.int8) - np.int8(16)).astype(np.float32)


def _q5_1(blocks: U8Array) -> F32Array:
    # f16 d, f16 m, 4 bytes of fifth bits, 16 bytes of nibbles; x = q * d + m
    d, m = _f16(blocks[:, :2]), _f16(blocks[:, 2:4])
    q = _nibbles(blocks[:, 8:]) | (_high_bits(blocks[:, 4:8]) << np.uint8(4))
    return d * q.astype(np.float32) + m


# ggml type -> (elements per block, bytes per block, block dequantizer)
_BLOCK_TYPES: dict[QType, tuple[int, int, Callable[[U8Array], F32Array]]] = {
    QType.Q8_0: (QK, 2 + QK, _q8_0),
    QType.Q4_0: (QK, 2 + QK // 2, _q4_0),
    QType.Q4_1: (QK, 4 + QK // 2, _q4_1),
    QType.Q5_0: (QK, 6 + QK // 2, _q5_0),
    QType.Q5_1: (QK, 8 + QK // 2, _q5_1),
}

SUPPORTED_TYPES: frozenset[QType] = frozenset({QType.F32, QType.F16, QType.BF16, *_BLOCK_TYPES})


def dequantize(data: npt.NDArray[np.generic], qtype: QType, shape: tuple[int, ...]) -> F32Array:
    """Dequantize raw GGUF tensor data to float32 of ``shape`` (torch order, rows last-major).

    ``data`` is what ``GGUFReader`` exposes as ``ReaderTensor.data`` (typed for float
    types, uint8 bytes for quantized ones); the byte layout is what matters.
    """
    raw = np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    if qtype == QType.F32:
        out = raw.view("<f4").astype(np.float32)
    elif qtype == QType.F16:
        out = raw.view("<f2").astype(np.float32)
    elif qtype == QType.BF16:
        # bfloat16 is the high half of a float32.
        out = (raw.view("<u2").astype(np.uint32) << np.uint32(16)).view(np.float32)
    elif qtype in _BLOCK_TYPES:
        block_size, type_size, fn = _BLOCK_TYPES[qtype]
        if raw.size % type_size:
            raise ValueError(f"{qtype.name} data of {raw.size} bytes is not whole blocks")
        out = fn(raw.reshape(-1, type_size)).reshape(-1)
        assert out.size == raw.size // type_size * block_size
    else:
        supported = ", ".join(sorted(t.name for t in SUPPORTED_TYPES))
        raise ValueError(f"unsupported GGUF tensor type {qtype.name}; supported types: {supported}")
    n = int(np.prod(shape))
    if out.size != n:
        raise ValueError(f"{qtype.name} data holds {out.size} values, shape {shape} needs {n}")
    return out.reshape(shape)
