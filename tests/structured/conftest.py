"""Fixtures for grammar tests: SmolLM2's tokenizer (no weights needed beyond its GGUF file),
Mistral tokenizers shipped with mistral-common, and a tokenizer-driven random walk."""

from __future__ import annotations

import json
import random
from pathlib import Path

import mistral_common
import pytest
from mistral_common.tokens.tokenizers.tekken import Tekkenizer

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.structured.grammar import GrammarCompiler, GrammarConstraint
from levant.structured.output import StructuredOutputs
from tests.models.tokenizers.conftest import smollm2_gguf_path, smollm2_tokenizer

__all__ = ["smollm2_gguf_path", "smollm2_tokenizer"]

MISTRAL_DATA = Path(mistral_common.__file__).parent / "data"


@pytest.fixture(scope="session")
def smollm2_structured(smollm2_tokenizer: HFTokenizer) -> StructuredOutputs:
    return StructuredOutputs(smollm2_tokenizer)


@pytest.fixture(scope="session")
def smollm2_compiler(smollm2_structured: StructuredOutputs) -> GrammarCompiler:
    return smollm2_structured.compiler


def tekken_v13(directory: Path) -> Path:
    """A v13 Tekken file (calls spelled ``[TOOL_CALLS]name[ARGS]{...}``), built from the
    v3 file mistral-common ships by declaring its special tokens explicitly."""
    data = json.loads((MISTRAL_DATA / "tekken_240911.json").read_text())
    specials = [
        {"rank": s["rank"], "token_str": str(s["token_str"]), "is_control": True}
        for s in Tekkenizer.DEPRECATED_SPECIAL_TOKENS
    ]
    specials += [
        {"rank": 20, "token_str": "[ARGS]", "is_control": True},
        {"rank": 21, "token_str": "[CALL_ID]", "is_control": True},
    ]
    specials += [
        {"rank": i, "token_str": f"<SPECIAL_{i}>", "is_control": True} for i in range(22, 1000)
    ]
    data["special_tokens"] = specials
    data["config"]["version"] = "v13"
    path = directory / "tekken.json"
    path.write_text(json.dumps(data))
    return path


@pytest.fixture(scope="session", params=["v3-spm", "v7-spm", "v3-tekken", "v13-tekken"])
def mistral_tokenizer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> MistralTokenizer:
    files = {
        "v3-spm": MISTRAL_DATA / "mistral_instruct_tokenizer_240323.model.v3",
        "v7-spm": MISTRAL_DATA / "mistral_instruct_tokenizer_241114.model.v7",
        "v3-tekken": MISTRAL_DATA / "tekken_240911.json",
    }
    name = str(request.param)
    path = files.get(name) or tekken_v13(tmp_path_factory.mktemp("tekken"))
    return MistralTokenizer.from_file(path)


def accepts(constraint: GrammarConstraint, ids: list[int]) -> bool:
    """Whether the grammar takes ``ids`` one by one (each allowed by its mask first)."""
    import torch

    from levant.engine.constraints import bitmask_words, unpack_bitmask

    vocab = constraint.vocab_size
    for token in ids:
        mask = torch.zeros((1, bitmask_words(vocab)), dtype=torch.int32)
        constraint.fill_bitmask(mask[0])
        if not bool(unpack_bitmask(mask, vocab)[0, token]):
            return False
        constraint.advance(token)
    return constraint.error is None


def random_walk(
    constraint: GrammarConstraint,
    decode: object,
    *,
    seed: int,
    max_tokens: int = 400,
    eos: frozenset[int] = frozenset(),
) -> list[int]:
    """Sample allowed tokens at random (biased towards closing JSON) until the grammar is
    complete: a model-free check that whatever a model picks under the mask is valid."""
    import torch

    from levant.engine.constraints import bitmask_words, unpack_bitmask

    rng = random.Random(seed)
    vocab = constraint.vocab_size
    out: list[int] = []
    texts: dict[int, str] = {}
    for _ in range(max_tokens):
        if constraint.is_done():
            break
        mask = torch.zeros((1, bitmask_words(vocab)), dtype=torch.int32)
        constraint.fill_bitmask(mask[0])
        allowed = unpack_bitmask(mask, vocab)[0].nonzero().view(-1).tolist()
        assert allowed, "the grammar allows nothing"
        closing = []
        for t in allowed:
            if t not in texts:
                texts[t] = decode([t])  # type: ignore[operator]
            if any(ch in texts[t] for ch in '"]}') or t in eos:
                closing.append(t)
        pool = closing if closing and rng.random() < 0.6 else allowed
        token = rng.choice(pool)
        out.append(token)
        constraint.advance(token)
        if token in eos:
            break
    return out
