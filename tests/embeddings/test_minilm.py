"""all-MiniLM-L6-v2 through our own code path against sentence-transformers' reference.

sentence-transformers reads the same pulled directory offline (HF_HUB_OFFLINE=1);
our vectors must match its vectors (cosine >= 0.9999), and a text's vector must not
depend on which other texts share its batch.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from levant.catalog.catalog import load_catalog
from levant.config import Settings
from levant.embeddings import EmbeddingService, InputTooLong, load_embedding_service
from levant.embeddings.head import SentenceHead, read_sentence_head
from tests.embeddings.conftest import EMBEDDING_MODEL

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "A man is playing a guitar on the street.",
    "How do I reset my password?",
    "Embeddings map text to vectors so that similar meanings lie close together.",
    "def add(a, b):\n    return a + b",
    "Le chat dort sur le canapé depuis ce matin.",
    "Où se trouve la gare la plus proche ?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "Ich möchte ein Zimmer für zwei Nächte reservieren.",
    "El tren sale de Madrid a las ocho y media.",
    "¿Cuánto cuesta este libro?",
    "Il pomeriggio è stato lungo e caldo.",
    "O Brasil é o maior país da América do Sul.",
    "Dit is een korte Nederlandse zin.",
    "Сегодня в Москве идёт снег.",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    "東京は日本の首都です。",
    "我喜欢在周末读书。",
    "مرحبا بكم في المكتبة",
    "",
]


@pytest.fixture(scope="module")
def service(minilm_dir: Path) -> EmbeddingService:
    card = load_catalog(Settings()).get(EMBEDDING_MODEL)
    return load_embedding_service(card, minilm_dir, Settings())


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> np.ndarray:
    os.environ["HF_HUB_OFFLINE"] = "1"  # the directory is complete: never ask a hub
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(minilm_dir), device="cpu")
    assert model.max_seq_length == 256
    out: np.ndarray = model.encode(SENTENCES, convert_to_numpy=True, batch_size=8)
    return out


def test_head_is_read_from_the_sentence_transformers_files(minilm_dir: Path) -> None:
    assert read_sentence_head(minilm_dir) == SentenceHead(
        "mean", normalize=True, max_seq_length=256
    )


def test_vectors_match_sentence_transformers(
    service: EmbeddingService, reference: np.ndarray
) -> None:
    ours = service.embed_now(service.tokenize_now(SENTENCES))
    assert ours.shape == (len(SENTENCES), 384) and ours.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    cosine = (ours * reference).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine


def test_a_vector_does_not_depend_on_its_batch(service: EmbeddingService) -> None:
    ids = service.tokenize_now(SENTENCES)
    together = service.embed_now(ids)
    alone = np.stack([service.embed_now([row])[0] for row in ids])
    np.testing.assert_allclose(together, alone, atol=1e-5)


def test_batches_group_similar_lengths_within_budget(service: EmbeddingService) -> None:
    lengths = [3, 250, 40, 7, 250, 9] * 20
    batches = service.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        assert len(batch) <= service.batch_size
        assert len(batch) * max(lengths[i] for i in batch) <= service.batch_tokens


def test_over_long_input_is_refused_not_truncated(service: EmbeddingService) -> None:
    assert service.max_input_tokens == 256
    ok = "word " * 254  # 254 tokens + [CLS] + [SEP]
    assert len(service.tokenize_now([ok])[0]) == 256
    with pytest.raises(InputTooLong) as info:
        service.tokenize_now(["fine", ok + "word"])
    assert (info.value.index, info.value.tokens, info.value.limit) == (1, 257, 256)


def test_weight_only_dtypes_load_the_encoder_in_float32(minilm_dir: Path) -> None:
    """LEVANT_DTYPE=int4 / int8 quantize the generative engine; an embedding model loaded
    beside it runs float32 and gives the float32 vectors."""
    card = load_catalog(Settings()).get(EMBEDDING_MODEL)
    quantized = load_embedding_service(card, minilm_dir, Settings(dtype="int4"))
    plain = load_embedding_service(card, minilm_dir, Settings())
    ids = plain.tokenize_now(SENTENCES[:3])
    # bf16 would differ by ~1e-3; float32 on the same weights agrees to rounding
    np.testing.assert_allclose(quantized.embed_now(ids), plain.embed_now(ids), rtol=0, atol=1e-6)


def test_an_unknown_dtype_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="dtype"):
        Settings(dtype="int3")  # type: ignore[arg-type]
