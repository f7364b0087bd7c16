"""``n`` choices and ``logprobs`` on /v1/chat/completions, real SmolLM2, both SDKs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from mistralai.client import Mistral
from openai import OpenAI

from levant.api.generation import child_seed
from tests.conftest import DEFAULT_MODEL, LiveServer
from tests.openapi_spec import validate

pytestmark = pytest.mark.slow

QUESTION: Any = [{"role": "user", "content": "Name three colours of the rainbow."}]
URL = "/v1/chat/completions"


def post(server: LiveServer, **body: Any) -> Any:
    r = server.client().post(URL, json={"model": DEFAULT_MODEL, "messages": QUESTION, **body})
    assert r.status_code == 200, r.text
    return r.json()


def texts(body: Any) -> list[str]:
    return [c["message"]["content"] for c in body["choices"]]


def test_n_choices_distinct_seeded_reproducible_and_usage(live_server: LiveServer) -> None:
    a = post(live_server, n=4, temperature=1.0, random_seed=5, max_tokens=12)
    validate(a, "ChatCompletionResponse")
    assert [c["index"] for c in a["choices"]] == [0, 1, 2, 3]
    assert len(set(texts(a))) > 1
    # Choice 0 samples with the request's seed, choice i with seed + i. That the same
    # seed then gives the same tokens in any batch holds with quantized weights (int8,
    # int4: row-independent kernels, tests/engine/test_fused_step.py); this server runs
    # float32, whose matmuls (oneDNN, MKL) round a row differently by batch size, and the
    # four choices reach the engine one by one, so two identical requests can be batched
    # differently.
    assert [child_seed(5, i) for i in range(4)] == [5, 6, 7, 8]
    assert child_seed(None, 2) is None
    # One seeded request, alone, twice: the same steps (a seeded request computes its own
    # prompt, so the second does not start from the first's cached blocks), the same text.
    one = post(live_server, temperature=1.0, random_seed=5, max_tokens=12)
    assert texts(one) == texts(post(live_server, temperature=1.0, random_seed=5, max_tokens=12))
    single = post(live_server, temperature=0, max_tokens=12)["usage"]
    usage = a["usage"]
    assert usage["prompt_tokens"] == single["prompt_tokens"]  # counted once
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["completion_tokens"] <= 4 * 12 and usage["completion_tokens"] > 12


def test_n_greedy_identical_to_n_1(live_server: LiveServer) -> None:
    one = post(live_server, temperature=0, max_tokens=16)
    many = post(live_server, n=3, temperature=0, max_tokens=16)
    assert texts(many) == texts(one) * 3
    assert many["usage"]["completion_tokens"] == 3 * one["usage"]["completion_tokens"]


def test_n_streamed_chunks_carry_index(live_server: LiveServer) -> None:
    full = post(live_server, n=2, temperature=0.8, random_seed=9, max_tokens=10)
    pieces: dict[int, list[str]] = {0: [], 1: []}
    finishes: dict[int, str] = {}
    usages = []
    with live_server.client().stream(
        "POST",
        URL,
        json={
            "model": DEFAULT_MODEL,
            "messages": QUESTION,
            "n": 2,
            "temperature": 0.8,
            "random_seed": 9,
            "max_tokens": 10,
            "stream": True,
        },
    ) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            event = json.loads(line[6:])
            validate(event, "CompletionChunk")
            for c in event["choices"]:
                pieces[c["index"]].append(c["delta"].get("content") or "")
                if c["finish_reason"]:
                    finishes[c["index"]] = c["finish_reason"]
            if event.get("usage"):
                usages.append(event["usage"])
    assert ["".join(pieces[i]) for i in (0, 1)] == texts(full)
    assert set(finishes) == {0, 1}
    assert usages == [full["usage"]]  # once, on the last choice's finishing chunk


def test_n_through_both_sdks(live_server: LiveServer) -> None:
    mistral: Any = Mistral(api_key=live_server.api_key, server_url=live_server.url)
    res = mistral.chat.complete(
        model=DEFAULT_MODEL, messages=QUESTION, n=3, max_tokens=8, temperature=1, random_seed=3
    )
    assert [c.index for c in res.choices] == [0, 1, 2]
    oa: Any = OpenAI(api_key=live_server.api_key, base_url=f"{live_server.url}/v1")
    out = oa.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        n=2,
        max_tokens=8,
        temperature=1,
        seed=3,
    )
    assert [c.index for c in out.choices] == [0, 1]
    assert [c.message.content for c in out.choices] == [c.message.content for c in res.choices[:2]]
    stream = oa.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        n=2,
        max_tokens=8,
        temperature=1,
        seed=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    got: dict[int, str] = {0: "", 1: ""}
    last = None
    for chunk in stream:
        for c in chunk.choices:
            got[c.index] += c.delta.content or ""
        last = chunk
    assert [got[0], got[1]] == [c.message.content for c in out.choices]
    assert last is not None and last.usage is not None
    assert last.usage.completion_tokens == out.usage.completion_tokens


@pytest.fixture(scope="module")
def reference_logprobs(smollm2_gguf: Path) -> Any:
    from tests.models.test_smollm2 import transformers_from_gguf

    return transformers_from_gguf(smollm2_gguf)


@pytest.fixture(scope="module")
def smollm2_gguf() -> Path:
    from tests.models.conftest import levant_test_home

    return levant_test_home() / "models" / DEFAULT_MODEL / "model.gguf"


def test_greedy_logprobs_equal_transformers(
    live_server: LiveServer, reference_logprobs: Any
) -> None:
    body = post(live_server, temperature=0, max_tokens=8, logprobs=True, top_logprobs=5)
    validate(body, "ChatCompletionResponse")
    content = body["choices"][0]["logprobs"]["content"]
    assert len(content) == body["usage"]["completion_tokens"]
    from levant.models.tokenizers.loader import load_tokenizer
    from levant.models.tokenizers.protocol import ChatMessage

    gguf = Path(live_server.state.settings.home) / "models" / DEFAULT_MODEL / "model.gguf"
    tok = load_tokenizer(gguf)
    prompt = tok.render_chat([ChatMessage("user", QUESTION[0]["content"])])
    ids = [t["token_id"] for t in content]
    with torch.no_grad():
        logits = reference_logprobs(torch.tensor([prompt + ids])).logits[0]
    expected = torch.log_softmax(logits[len(prompt) - 1 : -1].float(), dim=-1)
    text = ""
    for i, t in enumerate(content):
        assert t["logprob"] == pytest.approx(float(expected[i, t["token_id"]]), abs=1e-3)
        tops = t["top_logprobs"]
        assert len(tops) == 5
        assert [x["logprob"] for x in tops] == sorted((x["logprob"] for x in tops), reverse=True)
        assert tops[0]["token_id"] == t["token_id"] and tops[0]["token"] == t["token"]
        assert bytes(t["bytes"]).decode() == t["token"]
        text += t["token"]
    assert body["choices"][0]["message"]["content"].startswith(text.replace("<|im_end|>", ""))


def test_logprobs_streamed_and_in_sdks(live_server: LiveServer) -> None:
    oa: Any = OpenAI(api_key=live_server.api_key, base_url=f"{live_server.url}/v1")
    full = oa.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
    )
    lp = full.choices[0].logprobs
    assert lp is not None and lp.content is not None and len(lp.content[0].top_logprobs) == 2
    streamed = []
    for chunk in oa.chat.completions.create(
        model=DEFAULT_MODEL,
        messages=QUESTION,
        max_tokens=8,
        temperature=0,
        logprobs=True,
        top_logprobs=2,
        stream=True,
    ):
        for c in chunk.choices:
            if c.logprobs and c.logprobs.content:
                streamed += [(t.token, t.logprob) for t in c.logprobs.content]
    assert streamed == [(t.token, t.logprob) for t in lp.content]

    mistral: Any = Mistral(api_key=live_server.api_key, server_url=live_server.url)
    res = mistral.chat.complete(
        model=DEFAULT_MODEL, messages=QUESTION, max_tokens=8, temperature=0, logprobs=True
    )
    m_lp = res.choices[0].logprobs
    assert m_lp is not None
    assert [(t.token, t.logprob) for t in m_lp.content] == [
        (t.token, t.logprob) for t in lp.content
    ]
    assert all(not t.top_logprobs for t in m_lp.content)  # top_logprobs unset: none


def test_no_logprobs_key_unless_asked(live_server: LiveServer) -> None:
    body = post(live_server, temperature=0, max_tokens=4)
    assert "logprobs" not in body["choices"][0]


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"n": 0}, "n"),
        ({"n": 17}, "n"),
        ({"top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
        ({"logprobs": True, "top_logprobs": 21}, "top_logprobs"),
    ],
)
def test_bad_n_and_logprobs_are_422_naming_the_field(
    live_server: LiveServer, fields: dict[str, Any], param: str
) -> None:
    r = live_server.client().post(
        URL, json={"model": DEFAULT_MODEL, "messages": QUESTION, "max_tokens": 2, **fields}
    )
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["object"] == "error" and body["param"] == param
    assert param in body["message"]
