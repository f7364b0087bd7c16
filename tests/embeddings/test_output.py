"""output_dimension, output_dtype and encoding_format, against the documented formulas.

int8/uint8 are sentence-transformers' ``quantize_embeddings`` with the fixed ranges
[-1, 1]; binary/ubinary are its bit packing (``binary`` in offset binary).
"""

from __future__ import annotations

import base64

import numpy as np
import pytest
from sentence_transformers.util.quantization import quantize_embeddings

from levant.catalog.card import EmbeddingSpec
from levant.embeddings.output import output_dimension, quantize, to_wire, truncate


def unit_vectors(n: int = 50, d: int = 384, seed: int = 0) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    v[0, :8] = 0.0  # exact zeros: the boundary of the binary threshold
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("dtype", ["int8", "uint8", "binary", "ubinary"])
def test_quantization_matches_sentence_transformers(dtype: str) -> None:
    v = unit_vectors()
    ranges = np.stack([np.full(v.shape[1], -1.0), np.full(v.shape[1], 1.0)])
    expected = quantize_embeddings(v, dtype, ranges=ranges)  # type: ignore[arg-type]
    got = quantize(v, dtype)  # type: ignore[arg-type]
    assert got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


def test_int8_formula_and_bounds() -> None:
    v = np.array([[-1.0, -0.5, 0.0, 0.25, 1.0]], dtype=np.float32)
    step = np.float32(2) / np.float32(255)
    q = np.clip(np.floor((v + np.float32(1)) / step), 0, 255)
    np.testing.assert_array_equal(quantize(v, "uint8"), q.astype(np.uint8))
    np.testing.assert_array_equal(quantize(v, "int8"), (q - 128).astype(np.int8))
    codes = quantize(v, "int8")[0]
    assert codes[0] == -128 and codes[2] in (-1, 0) and codes[-1] >= 126  # float32 floor of 255


def test_int8_keeps_the_direction() -> None:
    v = unit_vectors()
    q = quantize(v, "int8").astype(np.float32)
    decoded = -1.0 + (q + 128 + 0.5) * (2.0 / 255)  # the documented decode
    cos = (decoded * v).sum(1) / np.linalg.norm(decoded, axis=1)
    assert cos.min() > 0.998  # step 2/255 against coordinates of about 1/sqrt(384)


def test_binary_packs_sign_bits_msb_first() -> None:
    v = np.array([[0.1, -0.1, 0.2, 0.0, -0.3, 0.4, 0.5, 0.6, -0.1, 0.9]], dtype=np.float32)
    ubin = quantize(v, "ubinary")
    assert ubin.tolist() == [[0b10100111, 0b01000000]]
    assert quantize(v, "binary").tolist() == [[0b10100111 - 128, 0b01000000 - 128]]


def test_base64_is_little_endian_bytes() -> None:
    v = unit_vectors(3, 16)
    (first, *_) = to_wire(quantize(v, "float"), "base64")
    assert isinstance(first, str)
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(first), dtype="<f4"), v[0])
    (codes, *_) = to_wire(quantize(v, "int8"), "base64")
    assert isinstance(codes, str)
    decoded = np.frombuffer(base64.b64decode(codes), dtype=np.int8)
    np.testing.assert_array_equal(decoded, quantize(v, "int8")[0])
    floats = to_wire(quantize(v, "float"), "float")
    assert floats[1] == v[1].tolist()


def test_output_dimension() -> None:
    fixed = EmbeddingSpec(dimension=384)
    assert output_dimension(fixed, None) == 384
    assert output_dimension(fixed, 384) == 384
    with pytest.raises(ValueError, match=r"not supported by this model.*always have 384"):
        output_dimension(fixed, 128)
    matryoshka = EmbeddingSpec(dimension=768, output_dimensions=[256, 512])
    assert output_dimension(matryoshka, 256) == 256
    with pytest.raises(ValueError, match="choose one of 256, 512, 768"):
        output_dimension(matryoshka, 100)


def test_truncation_renormalises_unit_vectors() -> None:
    v = unit_vectors(4, 64)
    cut = truncate(v, 16, renormalize=True)
    assert cut.shape == (4, 16) and cut.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(
        cut * np.linalg.norm(v[:, :16], axis=1, keepdims=True), v[:, :16], atol=1e-6
    )
    np.testing.assert_array_equal(truncate(v, 16, renormalize=False), v[:, :16])
