"""Structured outputs and tool calling on the live server (real SmolLM2), through the
official ``mistralai`` and ``openai`` SDKs: every answer parses and validates."""

from __future__ import annotations

import json
import re
from typing import Any, Literal

import httpx
import jsonschema
import pytest
from mistralai.client import Mistral
from openai import OpenAI
from pydantic import BaseModel, Field

from tests.conftest import DEFAULT_MODEL, LiveServer
from tests.openapi_spec import validate

pytestmark = pytest.mark.slow

MAX_TOKENS = 200  # room for the grammar to complete; a cut answer ends with "length"

PERSON: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "colour": {"enum": ["red", "green", "blue"]},
        # Greedy decoding of a 135M model repeats list items forever: bound the list.
        "hobbies": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
    },
    "required": ["name", "age", "colour", "hobbies"],
    "additionalProperties": False,
}
CITY: dict[str, Any] = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "country": {"type": "string"},
        "population": {"type": "integer", "minimum": 0},
        "landmarks": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "year": {"type": "integer"}},
                "required": ["name", "year"],
                "additionalProperties": False,
            },
            "maxItems": 3,
        },
        "capital": {"type": "boolean"},
    },
    "required": ["city", "country", "population", "landmarks", "capital"],
    "additionalProperties": False,
}
SCHEMAS = {
    "person": ("Describe a made-up person: name, age, favourite colour, hobbies.", PERSON),
    "city": ("Describe Paris: country, population, some landmarks, whether it is a capital.", CITY),
}

WEATHER: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city"},
                "unit": {"enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
TIME: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Get the current time in a time zone",
        "parameters": {
            "type": "object",
            "properties": {"timezone": {"type": "string"}},
            "required": ["timezone"],
        },
    },
}
TOOLS: list[Any] = [WEATHER, TIME]
ASK: list[Any] = [{"role": "user", "content": "What is the weather like in Paris right now?"}]


@pytest.fixture(scope="module")
def mistral(live_server: LiveServer) -> Mistral:
    return Mistral(api_key=live_server.api_key, server_url=live_server.url)


@pytest.fixture(scope="module")
def openai_client(live_server: LiveServer) -> OpenAI:
    return OpenAI(api_key=live_server.api_key, base_url=f"{live_server.url}/v1")


def check_calls(calls: list[Any], allowed: list[dict[str, Any]]) -> None:
    """Every call names an allowed tool, has a Mistral-style id, and valid arguments."""
    assert calls
    by_name = {t["function"]["name"]: t["function"]["parameters"] for t in allowed}
    for call in calls:
        assert re.fullmatch(r"[A-Za-z0-9]{9}", call.id)
        assert call.function.name in by_name
        arguments = call.function.arguments
        arguments = json.loads(arguments) if isinstance(arguments, str) else arguments
        jsonschema.validate(arguments, by_name[call.function.name])


# -- structured outputs -----------------------------------------------------------


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_mistral_json_schema_validates(mistral: Mistral, name: str) -> None:
    prompt, schema = SCHEMAS[name]
    res = mistral.chat.complete(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": prompt}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        },
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    choice = res.choices[0]
    assert choice.finish_reason == "stop"
    assert isinstance(choice.message.content, str)
    jsonschema.validate(json.loads(choice.message.content), schema)


@pytest.mark.parametrize("name", list(SCHEMAS))
def test_openai_json_schema_validates_streamed(openai_client: OpenAI, name: str) -> None:
    prompt, schema = SCHEMAS[name]
    stream = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=[{"role": "user", "content": prompt}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": name, "schema": schema, "strict": True},
        },
        max_tokens=MAX_TOKENS,
        temperature=0.8,
        seed=3,
        stream=True,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert chunks[-1].choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(text), schema)


class Landmark(BaseModel):
    name: str
    year: int


class Trip(BaseModel):
    destination: str
    days: int = Field(ge=1, le=30)
    transport: Literal["train", "plane", "car"]
    landmarks: list[Landmark] = Field(max_length=2)


def test_sdk_parse_helpers_with_pydantic_models(mistral: Mistral, openai_client: OpenAI) -> None:
    messages = [{"role": "user", "content": "Plan a short trip to Rome as JSON."}]
    parsed = openai_client.chat.completions.parse(
        model=DEFAULT_MODEL,
        messages=messages,  # type: ignore[arg-type]
        response_format=Trip,
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    trip = parsed.choices[0].message.parsed
    assert isinstance(trip, Trip) and 1 <= trip.days <= 30
    res = mistral.chat.parse(
        model=DEFAULT_MODEL,
        messages=messages,
        response_format=Trip,
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert isinstance(res.choices[0].message.parsed, Trip)  # type: ignore[union-attr]


def test_json_object_mode_parses_in_both_sdks(mistral: Mistral, openai_client: OpenAI) -> None:
    messages = [
        {"role": "user", "content": "Give me a JSON object with the name and age of a person."}
    ]
    res = mistral.chat.complete(
        model=DEFAULT_MODEL,
        messages=messages,  # type: ignore[arg-type]
        response_format={"type": "json_object"},
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert isinstance(json.loads(str(res.choices[0].message.content)), dict)
    out = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=messages,
        response_format={"type": "json_object"},
        max_tokens=MAX_TOKENS,
        temperature=0.7,
        seed=1,
    )
    assert isinstance(json.loads(str(out.choices[0].message.content)), dict)


def test_max_tokens_cutting_the_json_is_length(live_server: LiveServer) -> None:
    r = live_server.client().post(
        "/v1/chat/completions",
        json={
            "model": DEFAULT_MODEL,
            "messages": [{"role": "user", "content": SCHEMAS["person"][0]}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "p", "schema": PERSON},
            },
            "max_tokens": 5,
            "temperature": 0,
        },
    )
    body = r.json()
    assert r.status_code == 200 and body["choices"][0]["finish_reason"] == "length"
    assert body["choices"][0]["message"]["content"].startswith("{")


# -- tool calling -------------------------------------------------------------------


def test_mistral_any_forces_a_valid_call_and_results_round_trip(mistral: Mistral) -> None:
    res = mistral.chat.complete(
        model=DEFAULT_MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice="any",
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    choice = res.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls or []
    check_calls(calls, TOOLS)
    # The assistant's calls and the tool's result go back; the model answers in text.
    follow = mistral.chat.complete(
        model=DEFAULT_MODEL,
        messages=[
            *ASK,
            {"role": "assistant", "content": "", "tool_calls": [c.model_dump() for c in calls]},
            *(
                {"role": "tool", "tool_call_id": c.id, "name": c.function.name, "content": "21 C"}
                for c in calls
            ),
        ],
        tools=TOOLS,
        tool_choice="none",
        max_tokens=40,
        temperature=0,
    )
    assert follow.choices[0].finish_reason in ("stop", "length")
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls


def test_mistral_stream_sends_each_call_whole(mistral: Mistral) -> None:
    deltas = []
    finish = None
    for event in mistral.chat.stream(
        model=DEFAULT_MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=MAX_TOKENS,
        temperature=0,
    ):
        choice = event.data.choices[0]
        if choice.delta.tool_calls:
            deltas.append(choice.delta.tool_calls)
        finish = choice.finish_reason or finish
    assert finish == "tool_calls" and len(deltas) == 1
    check_calls(deltas[0], [WEATHER])
    assert all(c.function.name == "get_weather" for c in deltas[0])


def test_openai_named_and_required_choices(openai_client: OpenAI) -> None:
    for choice in ({"type": "function", "function": {"name": "get_time"}}, "required"):
        res = openai_client.chat.completions.create(
            model=DEFAULT_MODEL,
            messages=ASK,
            tools=TOOLS,
            tool_choice=choice,
            parallel_tool_calls=False,
            max_tokens=MAX_TOKENS,
            temperature=0,
        )
        out = res.choices[0]
        assert out.finish_reason == "tool_calls" and out.message.content is None
        calls = out.message.tool_calls or []
        assert len(calls) == 1  # parallel_tool_calls false
        check_calls(calls, [TIME] if isinstance(choice, dict) else TOOLS)


def test_openai_streamed_tool_calls_merge_by_index(openai_client: OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice="required",
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
    )
    merged: dict[int, dict[str, str]] = {}
    finish = None
    for chunk in stream:
        for choice in chunk.choices:
            for d in choice.delta.tool_calls or []:
                slot = merged.setdefault(d.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] += d.id or ""
                slot["name"] += (d.function.name or "") if d.function else ""
                slot["arguments"] += (d.function.arguments or "") if d.function else ""
            finish = choice.finish_reason or finish
    assert finish == "tool_calls" and merged
    for slot in merged.values():
        assert re.fullmatch(r"[A-Za-z0-9]{9}", slot["id"])
        tool = next(t for t in TOOLS if t["function"]["name"] == slot["name"])
        jsonschema.validate(json.loads(slot["arguments"]), tool["function"]["parameters"])


def test_openai_tool_results_round_trip(openai_client: OpenAI) -> None:
    first = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=ASK,
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    message = first.choices[0].message
    calls = message.tool_calls or []
    history: list[Any] = [*ASK, message.model_dump(exclude_none=True)]
    history += [{"role": "tool", "tool_call_id": c.id, "content": "Sunny, 24 C"} for c in calls]
    follow = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=history,
        tools=TOOLS,
        max_tokens=40,
        temperature=0,
    )
    out = follow.choices[0]
    if out.finish_reason == "tool_calls":  # auto: another call is allowed, and valid
        check_calls(out.message.tool_calls or [], TOOLS)
    else:
        assert out.message.content


def test_auto_answers_in_text_or_with_valid_calls(live_server: LiveServer) -> None:
    for question in (ASK[0]["content"], "Say hello.", "What time is it in Tokyo?"):
        r = live_server.client().post(
            "/v1/chat/completions",
            json={
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": question}],
                "tools": TOOLS,
                "max_tokens": MAX_TOKENS,
                "temperature": 0,
            },
        )
        body = r.json()
        validate(body, "ChatCompletionResponse")
        choice = body["choices"][0]
        if choice["finish_reason"] == "tool_calls":
            for call in choice["message"]["tool_calls"]:
                tool = next(t for t in TOOLS if t["function"]["name"] == call["function"]["name"])
                jsonschema.validate(
                    json.loads(call["function"]["arguments"]), tool["function"]["parameters"]
                )
        else:
            assert choice["message"]["content"] and not choice["message"]["tool_calls"]


def test_tool_responses_validate_against_mistral_spec(live_server: LiveServer) -> None:
    body = {
        "model": DEFAULT_MODEL,
        "messages": ASK,
        "tools": TOOLS,
        "tool_choice": "any",
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
    }
    r = live_server.client().post("/v1/chat/completions", json=body)
    validate(r.json(), "ChatCompletionResponse")
    assert r.json()["choices"][0]["message"]["tool_calls"][0]["type"] == "function"
    r = live_server.client().post("/v1/chat/completions", json={**body, "stream": True})
    events = [
        json.loads(line[6:])
        for line in r.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    for event in events:
        validate(event, "CompletionChunk")
    assert events[-1]["choices"][0]["finish_reason"] == "tool_calls"


# -- errors -----------------------------------------------------------------------


def post(server: LiveServer, **body: Any) -> httpx.Response:
    payload = {"model": DEFAULT_MODEL, "messages": ASK, "max_tokens": 8, **body}
    return server.client().post("/v1/chat/completions", json=payload)


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"name": "x", "schema": {"type": "objec"}},
                }
            },
            "response_format",
        ),
        ({"response_format": {"type": "json_schema"}}, "response_format.json_schema"),
        (
            {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}},
            "tool_choice",
        ),
        ({"tool_choice": "required"}, "tool_choice"),
        (
            {
                "messages": [*ASK, {"role": "assistant", "content": "{", "prefix": True}],
                "response_format": {"type": "json_object"},
            },
            "messages[1].prefix",
        ),
        (
            {"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": 3}}}]},
            "tools",
        ),
    ],
)
def test_bad_schemas_and_choices_are_400_in_mistral_shape(
    live_server: LiveServer, body: dict[str, Any], param: str
) -> None:
    r = post(live_server, **body)
    assert r.status_code == 400, r.text
    error = r.json()
    assert error["object"] == "error" and error["param"] == param
    assert set(error) == {"object", "message", "type", "param", "code"}
