"""Wire tools and response formats -> ``OutputSpec`` and chat messages, without a server."""

from __future__ import annotations

import json
from typing import Any

import pytest

from levant.api.chat_input import output_spec, to_chat_messages
from levant.api.errors import APIError
from levant.api.schemas.chat import ChatCompletionRequest
from levant.catalog.card import Capabilities, ModelCard
from levant.structured.tools import ToolChoice

TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def card(function_calling: bool = True) -> ModelCard:
    return ModelCard(
        id="m",
        name="m",
        licence="Apache-2.0",
        max_context_length=128,
        format="gguf",
        files=[],
        capabilities=Capabilities(function_calling=function_calling),
    )


def request(**body: Any) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}
    )


def test_tools_on_a_model_without_function_calling_are_400() -> None:
    with pytest.raises(APIError) as info:
        to_chat_messages(request(tools=[TOOL]), card(function_calling=False))
    assert info.value.status == 400 and "function_calling" in info.value.message


def test_plain_requests_have_no_output_spec() -> None:
    assert output_spec(request()) is None
    assert output_spec(request(response_format={"type": "text"})) is None


def test_response_formats_in_both_shapes() -> None:
    assert output_spec(request(response_format={"type": "json_object"})).response_schema == {  # type: ignore[union-attr]
        "type": "object"
    }
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    spec = output_spec(
        request(
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": schema, "strict": True},
            }
        )
    )
    assert spec is not None and spec.response_schema == schema and spec.response_strict
    loose = output_spec(
        request(
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
        )
    )
    assert loose is not None and not loose.response_strict
    with pytest.raises(APIError) as info:
        output_spec(request(response_format={"type": "json_schema"}))
    assert info.value.status == 400 and info.value.param == "response_format.json_schema"


@pytest.mark.parametrize(
    ("wire", "choice"),
    [
        (None, ToolChoice("auto")),
        ("auto", ToolChoice("auto")),
        ("none", ToolChoice("none")),
        ("any", ToolChoice("required")),
        ("required", ToolChoice("required")),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            ToolChoice("required", "get_weather"),
        ),
    ],
)
def test_tool_choice_in_both_dialects(wire: Any, choice: ToolChoice) -> None:
    body: dict[str, Any] = {"tools": [TOOL]}
    if wire is not None:
        body["tool_choice"] = wire
    spec = output_spec(request(**body))
    assert spec is not None and spec.tool_choice == choice
    assert spec.tools[0].name == "get_weather" and spec.parallel_tool_calls
    assert not output_spec(request(**body, parallel_tool_calls=False)).parallel_tool_calls  # type: ignore[union-attr]


def test_bad_function_names_are_400() -> None:
    bad = {"type": "function", "function": {"name": "no spaces", "parameters": {}}}
    with pytest.raises(APIError) as info:
        output_spec(request(tools=[bad]))
    assert info.value.param == "tools[0].function.name"


def test_tool_history_round_trips_into_chat_messages() -> None:
    body = request(
        tools=[TOOL],
        messages=[
            {"role": "user", "content": "Weather in Oslo?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "abcDEF123",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "abcDEF123", "content": "5 C"},
        ],
    )
    messages = to_chat_messages(body, card())
    assistant, tool = messages[1], messages[2]
    assert assistant.content == "" and assistant.tool_calls[0].id == "abcDEF123"
    assert json.loads(assistant.tool_calls[0].arguments) == {"city": "Oslo"}
    assert tool.name == "get_weather"  # found from the call it answers
    assert tool.tool_call_id == "abcDEF123"
    assert output_spec(body) is not None


def test_tool_call_arguments_must_be_an_object() -> None:
    body = request(
        messages=[
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "[1]"}}],
            },
            {"role": "tool", "tool_call_id": "a", "content": "y"},
        ]
    )
    with pytest.raises(APIError) as info:
        to_chat_messages(body, card())
    assert info.value.param == "messages[1].tool_calls[0].function.arguments"
