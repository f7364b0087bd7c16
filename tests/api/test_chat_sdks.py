"""The live server driven by the official ``mistralai`` and ``openai`` SDKs, real SmolLM2."""

from __future__ import annotations

import pytest
from mistralai.client import Mistral
from openai import OpenAI

from tests.conftest import DEFAULT_MODEL, LiveServer
from tests.openapi_spec import validate

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "Name three colours of the rainbow."}]


@pytest.fixture(scope="module")
def mistral(live_server: LiveServer) -> Mistral:
    return Mistral(api_key=live_server.api_key, server_url=live_server.url)


@pytest.fixture(scope="module")
def openai_client(live_server: LiveServer) -> OpenAI:
    return OpenAI(api_key=live_server.api_key, base_url=f"{live_server.url}/v1")


def test_mistral_complete(mistral: Mistral) -> None:
    res = mistral.chat.complete(
        model=DEFAULT_MODEL, messages=QUESTION, max_tokens=24, temperature=0
    )
    assert res.choices[0].message.content
    assert res.choices[0].finish_reason in ("stop", "length")
    assert res.usage.prompt_tokens > 0
    assert res.usage.completion_tokens > 0
    assert res.usage.total_tokens == res.usage.prompt_tokens + res.usage.completion_tokens


def test_mistral_stream_equals_non_stream_at_temperature_zero(mistral: Mistral) -> None:
    full = mistral.chat.complete(
        model=DEFAULT_MODEL, messages=QUESTION, max_tokens=32, temperature=0
    )
    pieces: list[str] = []
    usage = None
    finish = None
    for event in mistral.chat.stream(
        model=DEFAULT_MODEL, messages=QUESTION, max_tokens=32, temperature=0
    ):
        choice = event.data.choices[0]
        if isinstance(choice.delta.content, str):
            pieces.append(choice.delta.content)
        if choice.finish_reason is not None:
            finish = choice.finish_reason
            usage = event.data.usage
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None
    assert usage.completion_tokens == full.usage.completion_tokens
    assert usage.prompt_tokens == full.usage.prompt_tokens


def test_same_seed_same_output(mistral: Mistral) -> None:
    def draw(seed: int) -> str:
        res = mistral.chat.complete(
            model=DEFAULT_MODEL, messages=QUESTION, max_tokens=16, temperature=1.0, random_seed=seed
        )
        content = res.choices[0].message.content
        assert isinstance(content, str)
        return content

    assert draw(7) == draw(7)
    assert len({draw(s) for s in (1, 2, 3, 4)}) > 1  # the seed really changes sampling


def test_openai_complete_and_seed(openai_client: OpenAI) -> None:
    a = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_completion_tokens=16,
        seed=11,
        temperature=0.9,
    )
    b = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_completion_tokens=16,
        seed=11,
        temperature=0.9,
    )
    assert a.choices[0].message.content == b.choices[0].message.content
    assert a.usage is not None and a.usage.completion_tokens <= 16


def test_openai_stream_include_usage(openai_client: OpenAI) -> None:
    stream = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        max_tokens=12,
        temperature=0,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0
    full = openai_client.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,  # type: ignore[arg-type]
        max_tokens=12,
        temperature=0,
    )
    assert full.choices[0].message.content == text


def test_models_listed_in_both_sdks(mistral: Mistral, openai_client: OpenAI) -> None:
    ids = [m.id for m in mistral.models.list().data or []]
    assert DEFAULT_MODEL in ids
    assert DEFAULT_MODEL in [m.id for m in openai_client.models.list()]


def test_max_tokens_gives_length(live_server: LiveServer) -> None:
    r = live_server.client().post(
        f"{live_server.url}/v1/chat/completions",
        timeout=60,
        json={
            "model": DEFAULT_MODEL,
            "messages": QUESTION,
            "max_tokens": 3,
            "temperature": 0,
            "min_tokens": 3,
        },
    )
    body = r.json()
    assert r.status_code == 200, body
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 3


def test_stop_string_across_tokens(live_server: LiveServer) -> None:
    url = f"{live_server.url}/v1/chat/completions"
    base = {"model": DEFAULT_MODEL, "messages": QUESTION, "max_tokens": 32, "temperature": 0}
    text = (
        live_server.client()
        .post(url, json=base, timeout=60)
        .json()["choices"][0]["message"]["content"]
    )
    assert len(text) > 12
    stop = text[8:12]  # four characters from the middle: usually spans a token boundary
    cut = text.index(stop)
    for stream in (False, True):
        r = live_server.client().post(
            url, json={**base, "stop": [stop], "stream": stream}, timeout=60
        )
        if stream:
            got = "".join(_stream_text(r.text))
            assert '"finish_reason":"stop"' in r.text
        else:
            got = r.json()["choices"][0]["message"]["content"]
            assert r.json()["choices"][0]["finish_reason"] == "stop"
        assert got == text[:cut]


def test_assistant_prefix_is_continued(live_server: LiveServer) -> None:
    prefix = "The three colours are"
    r = live_server.client().post(
        f"{live_server.url}/v1/chat/completions",
        timeout=60,
        json={
            "model": DEFAULT_MODEL,
            "max_tokens": 12,
            "temperature": 0,
            "messages": [*QUESTION, {"role": "assistant", "content": prefix, "prefix": True}],
        },
    )
    content = r.json()["choices"][0]["message"]["content"]
    assert content.startswith(prefix) and len(content) > len(prefix)


def test_safe_prompt_changes_the_prompt(live_server: LiveServer) -> None:
    url = f"{live_server.url}/v1/chat/completions"
    base = {"model": DEFAULT_MODEL, "messages": QUESTION, "max_tokens": 1, "temperature": 0}
    plain = live_server.client().post(url, json=base, timeout=60).json()["usage"]["prompt_tokens"]
    safe = live_server.client().post(url, json={**base, "safe_prompt": True}, timeout=60).json()
    assert safe["usage"]["prompt_tokens"] > plain


def test_responses_validate_against_mistral_spec(live_server: LiveServer) -> None:
    r = live_server.client().post(
        f"{live_server.url}/v1/chat/completions",
        timeout=60,
        json={"model": DEFAULT_MODEL, "messages": QUESTION, "max_tokens": 8},
    )
    validate(r.json(), "ChatCompletionResponse")
    validate(live_server.client().get(f"{live_server.url}/v1/models").json(), "ModelList")
    r = live_server.client().post(
        f"{live_server.url}/v1/chat/completions",
        timeout=60,
        json={"model": DEFAULT_MODEL, "messages": QUESTION, "max_tokens": 8, "stream": True},
    )
    import json

    events = [
        json.loads(line[6:])
        for line in r.text.splitlines()
        if line.startswith("data: ") and line != "data: [DONE]"
    ]
    assert r.text.rstrip().endswith("data: [DONE]")
    for event in events:
        validate(event, "CompletionChunk")
    assert "usage" in events[-1]


def test_get_model_by_id_and_alias(live_server: LiveServer) -> None:
    card = live_server.client().get(f"{live_server.url}/v1/models/{DEFAULT_MODEL}").json()
    assert card["id"] == DEFAULT_MODEL
    assert card["track"] == "open" and card["licence"] == "Apache-2.0"
    assert card["capabilities"]["completion_chat"] is True
    validate(card, "BaseModelCard")
    alias = card["aliases"][0]
    assert (
        live_server.client().get(f"{live_server.url}/v1/models/{alias}").json()["id"]
        == DEFAULT_MODEL
    )


def _stream_text(body: str) -> list[str]:
    import json

    out = []
    for line in body.splitlines():
        if line.startswith("data: ") and line != "data: [DONE]":
            event = json.loads(line[6:])
            for choice in event.get("choices", []):
                out.append(choice["delta"].get("content") or "")
    return out
