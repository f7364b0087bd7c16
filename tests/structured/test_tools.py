"""Tool calling without a model: the JSON envelope (prompt, grammar, parser), Mistral's
control-token syntax on the tokenizers mistral-common ships, ids and plan errors."""

from __future__ import annotations

import json
import re

import jsonschema
import pytest

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.tokenizers.protocol import ChatMessage, ToolCall
from levant.structured.envelope import EnvelopeParser, EnvelopeSyntax, rewrite_history
from levant.structured.grammar import GrammarError
from levant.structured.mistral_syntax import MistralToolSyntax
from levant.structured.output import StructuredOutputs, tool_syntax_for
from levant.structured.syntax import OutputSpec
from levant.structured.tools import FunctionTool, ToolChoice, new_tool_call_id
from tests.structured.conftest import accepts, random_walk

WEATHER = FunctionTool(
    "get_weather",
    "Current weather in a city",
    {
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 20},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
# A parameters schema with its own $defs: still resolvable once embedded in the envelope.
BOOK = FunctionTool(
    "add_book",
    "Add a book",
    {
        "type": "object",
        "properties": {"book": {"$ref": "#/$defs/Book"}},
        "required": ["book"],
        "additionalProperties": False,
        "$defs": {
            "Book": {
                "type": "object",
                "properties": {"title": {"type": "string", "maxLength": 10}},
                "required": ["title"],
                "additionalProperties": False,
            }
        },
    },
)
TOOLS = (WEATHER, BOOK)


def spec(choice: ToolChoice, **kw: object) -> OutputSpec:
    return OutputSpec(tools=TOOLS, tool_choice=choice, **kw)  # type: ignore[arg-type]


def test_tool_call_ids_are_nine_alphanumerics() -> None:
    ids = {new_tool_call_id() for _ in range(200)}
    assert len(ids) == 200 and all(re.fullmatch(r"[A-Za-z0-9]{9}", i) for i in ids)


def test_templates_without_tool_syntax_get_the_envelope(
    smollm2_tokenizer: HFTokenizer, mistral_tokenizer: MistralTokenizer
) -> None:
    assert isinstance(tool_syntax_for(smollm2_tokenizer), EnvelopeSyntax)
    assert isinstance(tool_syntax_for(mistral_tokenizer), MistralToolSyntax)


# -- the envelope ---------------------------------------------------------------


def test_envelope_parser_streams_text_and_holds_json() -> None:
    text = EnvelopeParser(json_only=False)
    assert text.push([1], " ") == ""  # undecided while blank
    assert text.push([2], "Hello") == " Hello"
    assert text.push([3], " {x}") == " {x}"
    assert text.finish().calls == []

    call = EnvelopeParser(json_only=False)
    envelope = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo"}}]}'
    assert call.push([1], envelope[:5]) == "" and call.push([2], envelope[5:]) == ""
    parsed = call.finish()
    assert parsed.content == ""
    [c] = parsed.calls
    assert c.name == "get_weather" and json.loads(c.arguments) == {"city": "Oslo"}
    assert re.fullmatch(r"[A-Za-z0-9]{9}", c.id)


def test_envelope_parser_gives_back_json_that_is_no_call() -> None:
    answer = EnvelopeParser(json_only=True)  # auto + a JSON response format
    answer.push([1], '{"answer": 42}')
    assert answer.finish().content == '{"answer": 42}'
    cut = EnvelopeParser(json_only=True)  # max_tokens cut the envelope
    cut.push([1], '{"tool_calls": [{"na')
    parsed = cut.finish()
    assert parsed.calls == [] and parsed.content == '{"tool_calls": [{"na'


def test_history_becomes_plain_messages() -> None:
    call = ToolCall("abcDEF123", "get_weather", '{"city": "Oslo", "unit": "celsius"}')
    messages = [
        ChatMessage("user", "Weather in Oslo and Rome?"),
        ChatMessage("assistant", "", tool_calls=(call, replace_id(call, "xyzXYZ789"))),
        ChatMessage("tool", "5 C", name="get_weather", tool_call_id="abcDEF123"),
        ChatMessage("tool", "20 C", name="get_weather", tool_call_id="xyzXYZ789"),
    ]
    out = rewrite_history(messages)
    assert [m.role for m in out] == ["user", "assistant", "user"]
    assert json.loads(out[1].content)["tool_calls"][0] == {
        "name": "get_weather",
        "arguments": {"city": "Oslo", "unit": "celsius"},
    }
    results = json.loads(out[2].content)["tool_results"]
    assert [r["tool_call_id"] for r in results] == ["abcDEF123", "xyzXYZ789"]
    assert results[1] == {"tool_call_id": "xyzXYZ789", "name": "get_weather", "content": "20 C"}


def replace_id(call: ToolCall, new: str) -> ToolCall:
    return ToolCall(new, call.name, call.arguments)


def test_envelope_prompt_describes_the_tools_only_when_they_may_be_called(
    smollm2_tokenizer: HFTokenizer,
) -> None:
    syntax = EnvelopeSyntax(smollm2_tokenizer)
    messages = [ChatMessage("user", "hi")]
    with_tools = smollm2_tokenizer.decode(syntax.render(messages, spec(ToolChoice("auto"))))
    assert "get_weather" in with_tools and '{"tool_calls":' in with_tools
    named = smollm2_tokenizer.decode(
        syntax.render(messages, spec(ToolChoice("required", "add_book")))
    )
    assert 'You must call the function "add_book"' in named
    none = syntax.render(messages, spec(ToolChoice("none")))
    assert none == smollm2_tokenizer.render_chat(messages)


@pytest.mark.parametrize("seed", range(4))
def test_a_forced_envelope_is_always_a_valid_call(
    smollm2_structured: StructuredOutputs, smollm2_tokenizer: HFTokenizer, seed: int
) -> None:
    plan = smollm2_structured.plan(spec(ToolChoice("required"), parallel_tool_calls=seed % 2 == 0))
    constraint, parser = plan.constraint(), plan.parser()
    assert constraint is not None and parser is not None
    ids = random_walk(constraint, smollm2_tokenizer.decode, seed=seed)
    assert constraint.is_done()
    parser.push(ids, smollm2_tokenizer.decode(ids))
    parsed = parser.finish()
    assert parsed.calls and parsed.content == ""
    if seed % 2:
        assert len(parsed.calls) == 1  # parallel_tool_calls false: one call
    for call in parsed.calls:
        tool = next(t for t in TOOLS if t.name == call.name)
        jsonschema.validate(json.loads(call.arguments), dict(tool.parameters))


def test_named_choice_allows_only_that_function(
    smollm2_structured: StructuredOutputs, smollm2_tokenizer: HFTokenizer
) -> None:
    plan = smollm2_structured.plan(spec(ToolChoice("required", "add_book")))
    assert plan.constraint() is not None
    book = '{"tool_calls": [{"name": "add_book", "arguments": {"book": {"title": "Emma"}}}]}'
    weather = '{"tool_calls": [{"name": "get_weather", "arguments": {"city": "Oslo", "unit": "celsius"}}]}'  # noqa: E501
    assert accepts(plan.constraint(), smollm2_tokenizer.encode(book))  # type: ignore[arg-type]
    assert not accepts(plan.constraint(), smollm2_tokenizer.encode(weather))  # type: ignore[arg-type]


def test_auto_allows_text_or_the_envelope_and_none_is_free(
    smollm2_structured: StructuredOutputs, smollm2_tokenizer: HFTokenizer
) -> None:
    auto = smollm2_structured.plan(spec(ToolChoice("auto")))
    encode = smollm2_tokenizer.encode
    assert accepts(auto.constraint(), encode("It is sunny {probably}."))  # type: ignore[arg-type]
    call = '{"tool_calls": [{"name": "add_book", "arguments": {"book": {"title": "Emma"}}}]}'
    assert accepts(auto.constraint(), encode(call))  # type: ignore[arg-type]
    assert not accepts(auto.constraint(), encode('{"answer": 1}'))  # type: ignore[arg-type]
    none = smollm2_structured.plan(spec(ToolChoice("none")))
    assert none.constraint() is None and none.parser() is None


def test_auto_with_a_response_format_is_the_envelope_or_the_answer(
    smollm2_structured: StructuredOutputs, smollm2_tokenizer: HFTokenizer
) -> None:
    answer = {
        "type": "object",
        "properties": {"answer": {"type": "integer"}},
        "required": ["answer"],
    }
    plan = smollm2_structured.plan(spec(ToolChoice("auto"), response_schema=answer))
    encode = smollm2_tokenizer.encode
    assert accepts(plan.constraint(), encode('{"answer": 1}'))  # type: ignore[arg-type]
    assert not accepts(plan.constraint(), encode('{"answer": "x"}'))  # type: ignore[arg-type]
    assert not accepts(plan.constraint(), encode("Sure."))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("bad", "param"),
    [
        (OutputSpec(tools=TOOLS, tool_choice=ToolChoice("required", "nope")), "tool_choice"),
        (OutputSpec(tool_choice=ToolChoice("required")), "tool_choice"),
        (OutputSpec(tools=(WEATHER, WEATHER)), "tools"),
        (OutputSpec(tools=(FunctionTool("f", "", {"type": "objec"}),)), "tools"),
        (OutputSpec(response_schema={"type": "objec"}), "response_format"),
    ],
)
def test_plan_errors_name_the_field(
    smollm2_structured: StructuredOutputs, bad: OutputSpec, param: str
) -> None:
    with pytest.raises(GrammarError) as info:
        smollm2_structured.plan(bad)
    assert info.value.param == param


# -- Mistral ----------------------------------------------------------------------


def model_calls(
    tokenizer: MistralTokenizer, calls: list[tuple[str, dict[str, object]]]
) -> list[int]:
    """What a Mistral model writes for ``calls``, in its tokenizer version's syntax."""
    syntax = MistralToolSyntax(tokenizer)
    if syntax.args_id is None:
        body = json.dumps([{"name": n, "arguments": a} for n, a in calls])
        return [syntax.tool_calls_id, *tokenizer.encode(body)]
    ids: list[int] = []
    for name, arguments in calls:
        ids += [syntax.tool_calls_id, *tokenizer.encode(name), syntax.args_id]
        ids += tokenizer.encode(json.dumps(arguments))
    return ids


def test_mistral_calls_are_parsed_from_the_models_syntax(
    mistral_tokenizer: MistralTokenizer,
) -> None:
    structured = StructuredOutputs(mistral_tokenizer)
    plan = structured.plan(spec(ToolChoice("required")))
    ids = model_calls(
        mistral_tokenizer,
        [
            ("get_weather", {"city": "Oslo", "unit": "celsius"}),
            ("add_book", {"book": {"title": "Emma"}}),
        ],
    )
    constraint, parser = plan.constraint(), plan.parser()
    assert constraint is not None and parser is not None
    assert accepts(constraint, ids)
    for token in ids:
        assert parser.push([token], mistral_tokenizer.decode([token])) == ""
    parsed = parser.finish()
    assert [(c.name, json.loads(c.arguments)) for c in parsed.calls] == [
        ("get_weather", {"city": "Oslo", "unit": "celsius"}),
        ("add_book", {"book": {"title": "Emma"}}),
    ]


def test_mistral_grammar_checks_arguments_and_forbids_calls_under_none(
    mistral_tokenizer: MistralTokenizer,
) -> None:
    structured = StructuredOutputs(mistral_tokenizer)
    required = structured.plan(spec(ToolChoice("required")))
    bad = model_calls(mistral_tokenizer, [("get_weather", {"city": "Oslo", "unit": "kelvin"})])
    assert not accepts(required.constraint(), bad)  # type: ignore[arg-type]
    text = mistral_tokenizer.encode("Hello there")
    assert not accepts(required.constraint(), text)  # type: ignore[arg-type]
    auto = structured.plan(spec(ToolChoice("auto")))
    good = model_calls(mistral_tokenizer, [("add_book", {"book": {"title": "Emma"}})])
    assert accepts(auto.constraint(), text)  # type: ignore[arg-type]
    assert accepts(auto.constraint(), text + good)  # type: ignore[arg-type]
    none = structured.plan(spec(ToolChoice("none")))
    assert accepts(none.constraint(), text)  # type: ignore[arg-type]
    assert not accepts(none.constraint(), text + good)  # type: ignore[arg-type]


def test_mistral_text_streams_until_the_calls_start(mistral_tokenizer: MistralTokenizer) -> None:
    plan = StructuredOutputs(mistral_tokenizer).plan(spec(ToolChoice("auto")))
    parser = plan.parser()
    assert parser is not None
    assert parser.push([1], "Let me check.") == "Let me check."
    ids = model_calls(mistral_tokenizer, [("add_book", {"book": {"title": "Emma"}})])
    assert all(parser.push([t], mistral_tokenizer.decode([t])) == "" for t in ids)
    assert [c.name for c in parser.finish().calls] == ["add_book"]


def test_mistral_renders_tools_calls_and_results(mistral_tokenizer: MistralTokenizer) -> None:
    call = ToolCall("abcDEF123", "get_weather", '{"city": "Oslo", "unit": "celsius"}')
    messages = [
        ChatMessage("user", "Weather in Oslo?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "5 C", name="get_weather", tool_call_id="abcDEF123"),
    ]
    plan = StructuredOutputs(mistral_tokenizer).plan(spec(ToolChoice("auto")))
    ids = plan.render(messages)
    assert MistralToolSyntax(mistral_tokenizer).tool_calls_id in ids
    assert "get_weather" in mistral_tokenizer.decode(ids)
