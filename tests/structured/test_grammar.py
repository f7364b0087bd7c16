"""Grammar compilation with llguidance on SmolLM2's tokenizer: caching, errors, and a
model-free check that every token sequence the mask allows is valid JSON for the schema."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest
import torch

from levant.engine.constraints import bitmask_words, unpack_bitmask
from levant.models.tokenizers.hf import HFTokenizer
from levant.structured.grammar import GrammarCompiler, GrammarError
from tests.structured.conftest import accepts, random_walk

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "colour": {"enum": ["red", "green", "blue"]},
        "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "colour", "hobbies"],
    "additionalProperties": False,
}
NESTED = {
    "type": "object",
    "properties": {
        "title": {"type": "string", "maxLength": 20},
        "author": {"$ref": "#/$defs/Person"},
        "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "minItems": 1, "maxItems": 2},
        "rating": {"type": "number"},
        "draft": {"type": "boolean"},
    },
    "required": ["title", "author", "tags", "draft"],
    "additionalProperties": False,
    "$defs": {
        "Person": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "maxLength": 12},
                "born": {"type": "integer"},
            },
            "required": ["name", "born"],
            "additionalProperties": False,
        }
    },
}


@pytest.mark.parametrize("schema", [None, PERSON, NESTED], ids=["json_object", "person", "nested"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_allowed_walk_is_valid_json_for_the_schema(
    smollm2_compiler: GrammarCompiler,
    smollm2_tokenizer: HFTokenizer,
    schema: dict[str, Any] | None,
    seed: int,
) -> None:
    constraint = smollm2_compiler.json_schema(schema).constraint()
    ids = random_walk(constraint, smollm2_tokenizer.decode, seed=seed)
    assert constraint.is_done(), smollm2_tokenizer.decode(ids)
    value = json.loads(smollm2_tokenizer.decode(ids))
    jsonschema.validate(value, schema or {"type": "object"})


def test_canonical_layout_is_enforced(
    smollm2_compiler: GrammarCompiler, smollm2_tokenizer: HFTokenizer
) -> None:
    grammar = smollm2_compiler.json_schema(PERSON)
    good = '{"name": "Ada", "age": 36, "colour": "red", "hobbies": ["maths"]}'
    assert accepts(grammar.constraint(), smollm2_tokenizer.encode(good))
    assert not accepts(grammar.constraint(), smollm2_tokenizer.encode(good.replace(": ", ":")))
    wrong_enum = good.replace('"red"', '"pink"')
    assert not accepts(grammar.constraint(), smollm2_tokenizer.encode(wrong_enum))


def test_compiled_grammars_are_cached_and_constraints_are_independent(
    smollm2_tokenizer: HFTokenizer,
) -> None:
    compiler = GrammarCompiler(smollm2_tokenizer, cache_size=2)
    first = compiler.json_schema(PERSON)
    assert compiler.json_schema(dict(PERSON)) is first  # same schema text: one compile
    a, b = first.constraint(), first.constraint()
    a.advance(smollm2_tokenizer.encode("{")[0])
    assert not accepts(a, smollm2_tokenizer.encode("{"))  # a moved on ...
    assert accepts(b, smollm2_tokenizer.encode('{"name": "x"'))  # ... b did not
    compiler.json_schema(NESTED)
    compiler.json_schema(None)  # evicts PERSON (least recently used)
    assert compiler.json_schema(PERSON) is not first


@pytest.mark.parametrize(
    ("schema", "message"),
    [
        ({"type": "objec"}, "objec"),
        ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "missing"),
        ({"type": "string", "pattern": "[a-z"}, "regex"),
    ],
)
def test_invalid_schemas_raise_grammar_error(
    smollm2_compiler: GrammarCompiler, schema: dict[str, Any], message: str
) -> None:
    with pytest.raises(GrammarError, match=message):
        smollm2_compiler.json_schema(schema)


def test_non_strict_schemas_ignore_keywords_that_cannot_be_enforced(
    smollm2_compiler: GrammarCompiler,
) -> None:
    schema = {"type": "object", "properties": {"u": {"type": "string", "format": "uri-ref"}}}
    with pytest.raises(GrammarError):
        smollm2_compiler.json_schema(schema, strict=True)
    smollm2_compiler.json_schema(schema, strict=False)


def test_mask_fits_a_model_vocabulary_larger_or_smaller_than_the_tokenizer(
    smollm2_compiler: GrammarCompiler,
) -> None:
    constraint = smollm2_compiler.json_schema(None).constraint()
    vocab = constraint.vocab_size
    big = torch.zeros(bitmask_words(vocab + 100), dtype=torch.int32)
    constraint.fill_bitmask(big)
    allowed = unpack_bitmask(big[None], vocab + 100)[0]
    assert allowed[:vocab].any() and not allowed[vocab:].any()
    small = torch.zeros(bitmask_words(vocab) - 1, dtype=torch.int32)
    constraint.fill_bitmask(small)
    assert torch.equal(small, big[: small.numel()])
