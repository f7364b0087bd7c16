"""Our GGUF dequantization against hand-built blocks and gguf-py's reference."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from gguf import GGMLQuantizationType as QType
from gguf import GGUFReader
from gguf import quants as ref

from levant.models.loaders.gguf_quants import SUPPORTED_TYPES, dequantize


def f16_bytes(x: float) -> bytes:
    return np.float16(x).tobytes()


def test_q8_0_block() -> None:
    q = np.arange(-16, 16, dtype=np.int8)
    block = np.frombuffer(f16_bytes(0.5) + q.tobytes(), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(block, QType.Q8_0, (32,)), q * 0.5)


def test_q4_0_block_low_nibbles_first() -> None:
    q = np.arange(32) % 16  # element j holds j mod 16
    packed = (q[:16] | (q[16:] << 4)).astype(np.uint8)
    block = np.frombuffer(f16_bytes(2.0) + packed.tobytes(), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(block, QType.Q4_0, (32,)), (q - 8) * 2.0)


def test_q4_1_block() -> None:
    q = (np.arange(32) * 7) % 16
    packed = (q[:16] | (q[16:] << 4)).astype(np.uint8)
    block = np.frombuffer(f16_bytes(0.25) + f16_bytes(-1.0) + packed.tobytes(), dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(block, QType.Q4_1, (32,)), q * 0.25 - 1.0)


def test_f16_and_bf16() -> None:
    x = np.array([1.5, -2.25, 1024.0, 0.0], dtype=np.float32)
    np.testing.assert_array_equal(
        dequantize(x.astype(np.float16), QType.F16, (2, 2)), x.reshape(2, 2)
    )
    bf16 = (x.view(np.uint32) >> 16).astype(np.uint16)  # exact: these values fit 8 mantissa bits
    np.testing.assert_array_equal(dequantize(bf16, QType.BF16, (4,)), x)


def test_two_rows_keep_row_order() -> None:
    rows = np.stack([np.full(32, 1, np.int8), np.full(32, -3, np.int8)])
    blocks = np.concatenate(
        [np.frombuffer(f16_bytes(1.0) + r.tobytes(), dtype=np.uint8) for r in rows]
    )
    np.testing.assert_array_equal(dequantize(blocks, QType.Q8_0, (2, 32)), rows.astype(np.float32))


@pytest.mark.parametrize(
    "qtype",
    [QType.F16, QType.BF16, QType.Q8_0, QType.Q4_0, QType.Q4_1, QType.Q5_0, QType.Q5_1],
    ids=lambda q: q.name,
)
def test_matches_gguf_reference_on_random_data(qtype: QType) -> None:
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    data = x.astype(np.float16) if qtype == QType.F16 else ref.quantize(x, qtype)
    expected = ref.dequantize(data, qtype).reshape(8, 256)
    np.testing.assert_array_equal(dequantize(data, qtype, (8, 256)), expected)


def test_unsupported_type_names_it() -> None:
    assert QType.Q6_K not in SUPPORTED_TYPES
    with pytest.raises(ValueError, match="Q6_K"):
        dequantize(np.zeros(210, np.uint8), QType.Q6_K, (256,))


def test_every_smollm2_tensor_matches_gguf_reference(smollm2_gguf: Path) -> None:
    reader = GGUFReader(smollm2_gguf)
    seen = set()
    for t in reader.tensors:
        seen.add(t.tensor_type)
        shape = tuple(int(n) for n in reversed(t.shape))
        expected = ref.dequantize(t.data, t.tensor_type).reshape(shape)
        np.testing.assert_array_equal(dequantize(t.data, t.tensor_type, shape), expected, t.name)
    assert {QType.Q4_1, QType.Q8_0, QType.F32} <= seen
