"""Hermes-style chat templates (``<tool_call>`` blocks, as Qwen's): rendered by the template,
enforced by the grammar, parsed back; on SmolLM2's vocabulary with such a template."""

from __future__ import annotations

import json

import jsonschema
import pytest

from levant.models.tokenizers.hf import HFTokenizer
from levant.models.tokenizers.protocol import ChatMessage, ToolCall
from levant.structured.hermes_syntax import HermesParser, HermesToolSyntax
from levant.structured.output import StructuredOutputs, tool_syntax_for
from levant.structured.syntax import OutputSpec
from levant.structured.tools import ToolChoice
from tests.structured.conftest import accepts, random_walk
from tests.structured.test_tools import TOOLS, spec

# Qwen2.5's template, abridged to what matters here.
HERMES_TEMPLATE = """
{%- if tools %}<|im_start|>system
{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\
{% else %}You are helpful.{% endif %}

# Tools

You may call one or more functions to assist with the user query.

You are provided with function signatures within <tools></tools> XML tags:
<tools>{% for tool in tools %}
{{ tool | tojson }}{% endfor %}
</tools>

For each function call, return a json object with function name and arguments within \
<tool_call></tool_call> XML tags:
<tool_call>
{"name": <function-name>, "arguments": <args-json-object>}
</tool_call><|im_end|>
{% elif messages[0]['role'] == 'system' %}<|im_start|>system
{{ messages[0]['content'] }}<|im_end|>
{% endif %}
{%- for message in messages %}
{%- if message.role == 'system' and loop.first %}
{%- elif message.role == 'assistant' and message.tool_calls %}<|im_start|>assistant
{{ message.content }}{% for tc in message.tool_calls %}
<tool_call>
{"name": "{{ tc.function.name }}", "arguments": {{ tc.function.arguments | tojson }}}
</tool_call>{% endfor %}<|im_end|>
{% elif message.role == 'tool' %}<|im_start|>user
<tool_response>
{{ message.content }}
</tool_response><|im_end|>
{% else %}<|im_start|>{{ message.role }}
{{ message.content }}<|im_end|>
{% endif %}
{%- endfor %}
{%- if add_generation_prompt %}<|im_start|>assistant
{% endif %}
"""


@pytest.fixture(scope="module")
def hermes(smollm2_tokenizer: HFTokenizer) -> HFTokenizer:
    return HFTokenizer(
        smollm2_tokenizer.backend,
        chat_template=HERMES_TEMPLATE,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )


@pytest.fixture(scope="module")
def structured(hermes: HFTokenizer) -> StructuredOutputs:
    return StructuredOutputs(hermes)


def test_hermes_templates_get_their_own_syntax(
    hermes: HFTokenizer, smollm2_tokenizer: HFTokenizer
) -> None:
    assert hermes.supports_tools and not smollm2_tokenizer.supports_tools
    assert isinstance(tool_syntax_for(hermes), HermesToolSyntax)


def test_the_template_renders_tools_calls_and_results(
    structured: StructuredOutputs, hermes: HFTokenizer
) -> None:
    call = ToolCall("abcDEF123", "get_weather", '{"city": "Oslo", "unit": "celsius"}')
    messages = [
        ChatMessage("user", "Weather in Oslo?"),
        ChatMessage("assistant", "", tool_calls=(call,)),
        ChatMessage("tool", "5 C", name="get_weather", tool_call_id="abcDEF123"),
    ]
    text = hermes.decode(structured.plan(spec(ToolChoice("auto"))).render(messages))
    assert '"name": "get_weather"' in text and "<tools>" in text
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"' in text
    assert "<tool_response>\n5 C\n</tool_response>" in text
    none = hermes.decode(structured.plan(spec(ToolChoice("none"))).render(messages))
    assert "<tools>" not in none  # no tools offered, history still rendered
    assert "<tool_response>" in none


@pytest.mark.parametrize("seed", range(3))
def test_forced_calls_are_valid_blocks(
    structured: StructuredOutputs, hermes: HFTokenizer, seed: int
) -> None:
    plan = structured.plan(spec(ToolChoice("required")))
    constraint, parser = plan.constraint(), plan.parser()
    assert constraint is not None and parser is not None
    ids = random_walk(constraint, hermes.decode, seed=seed, eos=hermes.eos_ids)
    text = hermes.decode(ids)
    assert parser.push(ids, text) == ""
    parsed = parser.finish()
    assert parsed.calls, text
    for call in parsed.calls:
        tool = next(t for t in TOOLS if t.name == call.name)
        jsonschema.validate(json.loads(call.arguments), dict(tool.parameters))


def test_auto_is_text_or_calls(structured: StructuredOutputs, hermes: HFTokenizer) -> None:
    plan = structured.plan(spec(ToolChoice("auto"), parallel_tool_calls=False))
    call = (
        '<tool_call>\n{"name": "add_book", "arguments": {"book": {"title": "Emma"}}}\n</tool_call>'
    )
    assert accepts(plan.constraint(), hermes.encode("Sunny, I think."))  # type: ignore[arg-type]
    assert accepts(plan.constraint(), hermes.encode(call))  # type: ignore[arg-type]
    bad = call.replace('"Emma"', "7")
    assert not accepts(plan.constraint(), hermes.encode(bad))  # type: ignore[arg-type]
    two = f"{call}\n{call}"  # parallel_tool_calls false: one block only
    assert not accepts(plan.constraint(), hermes.encode(two))  # type: ignore[arg-type]
    answer = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    either = structured.plan(spec(ToolChoice("auto"), response_schema=answer))
    assert accepts(either.constraint(), hermes.encode('{"a": 1}'))  # type: ignore[arg-type]
    assert accepts(either.constraint(), hermes.encode(call))  # type: ignore[arg-type]


def test_hermes_parser_streams_text_and_reads_blocks() -> None:
    text = HermesParser(calls_only=False)
    assert text.push([1], "Hi <tool_call>") == "Hi <tool_call>"
    assert text.finish().calls == []
    calls = HermesParser(calls_only=False)
    out = (
        '<tool_call>\n{"name": "a", "arguments": {"x": 1}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {}}\n</tool_call>'
    )
    assert calls.push([1], out[:7]) == "" and calls.push([2], out[7:]) == ""
    assert [(c.name, json.loads(c.arguments)) for c in calls.finish().calls] == [
        ("a", {"x": 1}),
        ("b", {}),
    ]
    cut = HermesParser(calls_only=True)
    cut.push([1], '<tool_call>\n{"name": "a", "argu')
    assert cut.finish().content == '<tool_call>\n{"name": "a", "argu'


def test_plain_response_format_needs_no_tool_syntax(structured: StructuredOutputs) -> None:
    plan = structured.plan(OutputSpec(response_schema={"type": "object"}))
    assert plan.constraint() is not None and plan.parser() is None
