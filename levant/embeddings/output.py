"""Embeddings as the client asked for them: ``output_dimension``, ``output_dtype``, encoding.

Boundary: float32 vectors (n, d) in, one wire value per vector out (a list of numbers,
or a base64 string of the little-endian bytes). Pure numpy; no model, no HTTP.

``output_dtype`` follows Mistral's documentation (codestral-embed): ``int8`` is
integers in [-128, 127], ``uint8`` in [0, 255], ``binary`` / ``ubinary`` one bit per
dimension packed eight to a byte (so 1/8 of the dimension), ``binary`` stored as
int8 by the offset binary method. Mistral gives no formula for the scaling, so it
is sentence-transformers' ``quantize_embeddings`` with fixed ranges:

* int8 / uint8: per dimension, ``q = clip(floor((x - lo) / ((hi - lo) / 255)), 0, 255)``
  with ``lo = -1, hi = 1`` for every dimension (the bounds of a unit vector's
  coordinates, so nothing is clipped); ``uint8 = q``, ``int8 = q - 128``. The ranges
  are fixed rather than taken from the batch, so a text's codes never depend on
  which other texts came with it. Decode as ``x ≈ lo + (q + 0.5) * (hi - lo) / 255``.
* binary / ubinary: bit ``x > 0``, packed most significant bit first
  (``numpy.packbits``); ``ubinary`` is the packed byte, ``binary`` the byte minus 128.
"""

from __future__ import annotations

import base64
from typing import Literal

import numpy as np
import numpy.typing as npt

from levant.catalog.card import EmbeddingSpec

OutputDtype = Literal["float", "int8", "uint8", "binary", "ubinary"]
EncodingFormat = Literal["float", "base64"]
WireEmbedding = list[float] | list[int] | str

RANGE_LO = -1.0
RANGE_HI = 1.0


def output_dimension(spec: EmbeddingSpec, requested: int | None) -> int:
    """The dimension to return; ValueError (for a 400) if the model cannot give ``requested``."""
    if requested is None or requested == spec.dimension:
        return spec.dimension
    if requested in spec.output_dimensions:
        return requested
    if not spec.output_dimensions:
        raise ValueError(
            f"output_dimension is not supported by this model: its embeddings always have "
            f"{spec.dimension} dimensions"
        )
    sizes = ", ".join(str(n) for n in sorted({*spec.output_dimensions, spec.dimension}))
    raise ValueError(f"output_dimension {requested} is not supported; choose one of {sizes}")


def truncate(
    vectors: npt.NDArray[np.float32], dimension: int, *, renormalize: bool
) -> npt.NDArray[np.float32]:
    """The first ``dimension`` coordinates (Matryoshka), back to unit length if they were."""
    if dimension == vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimension]
    if not renormalize:
        return np.ascontiguousarray(cut)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    unit: npt.NDArray[np.float32] = (cut / np.maximum(norms, 1e-12)).astype(np.float32)
    return unit


def quantize(vectors: npt.NDArray[np.float32], dtype: OutputDtype) -> npt.NDArray[np.generic]:
    """(n, d) float32 unit vectors -> (n, d) or (n, ceil(d / 8)) in ``dtype``'s numpy type."""
    if dtype == "float":
        return vectors.astype(np.float32, copy=False)
    if dtype in ("int8", "uint8"):
        lo, hi = np.float32(RANGE_LO), np.float32(RANGE_HI)
        step = (hi - lo) / np.float32(255)
        q = np.clip(np.floor((vectors - lo) / step), 0, 255)
        codes: npt.NDArray[np.generic] = (
            q.astype(np.uint8) if dtype == "uint8" else (q - 128).astype(np.int8)
        )
        return codes
    packed = np.packbits(vectors > 0, axis=-1)  # (n, ceil(d / 8)) uint8
    return packed if dtype == "ubinary" else (packed.astype(np.int16) - 128).astype(np.int8)


def to_wire(values: npt.NDArray[np.generic], encoding: EncodingFormat) -> list[WireEmbedding]:
    """One JSON value per row: numbers, or base64 of the row's little-endian bytes."""
    if encoding == "base64":
        little = values.astype(values.dtype.newbyteorder("<"), copy=False)
        return [base64.b64encode(row.tobytes()).decode("ascii") for row in little]
    rows: list[WireEmbedding] = values.tolist()
    return rows
