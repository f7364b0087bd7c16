"""``/v1/fim/completions`` end to end through the official ``mistralai`` SDK.

A small random Mistral-architecture model (consolidated format, with mistral-common's
real v3 tokenizer so the vocabulary sizes agree) is served from an isolated home
beside SmolLM2, whose tokenizer has no FIM and must be refused with a 400.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import mistral_common
import pytest
import torch
import yaml
from mistralai.client import Mistral
from mistralai.client.errors import SDKError
from safetensors.torch import save_file

from levant.config import Settings
from levant.models.config import ModelConfig
from levant.models.tokenizers.fim import encode_fim
from levant.models.tokenizers.mistral import MistralTokenizer
from levant.models.transformer import Transformer
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home
from tests.openapi_spec import validate

pytestmark = pytest.mark.slow

FIM_MODEL = "tiny-codestral-test"
TOKENIZER = (
    Path(mistral_common.__file__).parent / "data" / "mistral_instruct_tokenizer_240323.model.v3"
)
PROMPT = "def add(a, b):\n    "
SUFFIX = "\n\nprint(add(1, 2))"


def write_random_mistral(out: Path) -> None:
    """params.json + consolidated.safetensors (random weights) + tokenizer.model.v3."""
    vocab = MistralTokenizer.from_file(TOKENIZER).vocab_size
    config = ModelConfig(
        vocab_size=vocab, dim=64, n_layers=2, n_heads=4, n_kv_heads=2, hidden_dim=128, head_dim=16
    )
    torch.manual_seed(0)
    model = Transformer(config)
    out.mkdir(parents=True)
    save_file(
        {k: v.contiguous() for k, v in model.state_dict().items()},
        out / "consolidated.safetensors",
    )
    params = {
        "dim": 64,
        "n_layers": 2,
        "n_heads": 4,
        "n_kv_heads": 2,
        "hidden_dim": 128,
        "head_dim": 16,
        "norm_eps": 1e-5,
        "vocab_size": vocab,
        "rope_theta": 10000.0,
        "max_seq_len": 512,
    }
    (out / "params.json").write_text(json.dumps(params))
    (out / "tokenizer.model.v3").write_bytes(TOKENIZER.read_bytes())


def card_for(directory: Path) -> dict[str, Any]:
    files = [
        {
            "path": f.name,
            "size": f.stat().st_size,
            "sha256": hashlib.sha256(f.read_bytes()).hexdigest(),
        }
        for f in sorted(directory.iterdir())
    ]
    return {
        "id": FIM_MODEL,
        "name": "Tiny random Codestral-style model",
        "licence": "Apache-2.0",
        "format": "mistral",
        "architecture": "llama",
        "max_context_length": 512,
        "capabilities": {"completion_chat": True, "completion_fim": True},
        "files": files,
        "sources": [{"kind": "local", "path": str(directory)}],
    }


@pytest.fixture(scope="module")
def server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    base = tmp_path_factory.mktemp("fim-home")
    weights = base / "weights"
    write_random_mistral(weights)
    home, catalog = isolated_home(base / "home", model_home)
    entries = yaml.safe_load(catalog.read_text())
    entries["models"].append(card_for(weights))
    catalog.write_text(yaml.safe_dump(entries))
    settings = Settings(home=home, catalog_path=catalog)
    pull(load_catalog(settings).get(FIM_MODEL), ModelStore(settings))
    live = LiveServer(settings, preload=[FIM_MODEL])
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def mistral(server: LiveServer) -> Mistral:
    return Mistral(api_key=server.api_key, server_url=server.url)


def test_complete_through_the_sdk(server: LiveServer, mistral: Mistral) -> None:
    res = mistral.fim.complete(
        model=FIM_MODEL, prompt=PROMPT, suffix=SUFFIX, max_tokens=12, min_tokens=12, temperature=0
    )
    assert res.object == "chat.completion" and res.model == FIM_MODEL
    choice = res.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason == "length"
    prompt_ids = encode_fim(MistralTokenizer.from_file(TOKENIZER), PROMPT, SUFFIX)
    assert res.usage.prompt_tokens == len(prompt_ids)
    assert res.usage.completion_tokens == 12
    assert res.usage.total_tokens == len(prompt_ids) + 12


def test_stream_equals_non_stream_at_temperature_zero(mistral: Mistral) -> None:
    args: dict[str, Any] = {
        "model": FIM_MODEL,
        "prompt": PROMPT,
        "suffix": SUFFIX,
        "max_tokens": 16,
        "temperature": 0,
    }
    full = mistral.fim.complete(**args)
    pieces: list[str] = []
    finish = usage = None
    for event in mistral.fim.stream(**args):
        choice = event.data.choices[0]
        if isinstance(choice.delta.content, str):
            pieces.append(choice.delta.content)
        if choice.finish_reason is not None:
            finish, usage = choice.finish_reason, event.data.usage
    assert "".join(pieces) == full.choices[0].message.content
    assert finish == full.choices[0].finish_reason
    assert usage is not None and usage.completion_tokens == full.usage.completion_tokens


def test_responses_match_the_spec(server: LiveServer) -> None:
    with server.client() as c:
        body = {"model": FIM_MODEL, "prompt": PROMPT, "suffix": SUFFIX, "max_tokens": 4}
        r = c.post("/v1/fim/completions", json=body)
        assert r.status_code == 200, r.text
        validate(r.json(), "FIMCompletionResponse")
        with c.stream("POST", "/v1/fim/completions", json={**body, "stream": True}) as s:
            lines = [line for line in s.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        validate(json.loads(line.removeprefix("data: ")), "CompletionChunk")


def test_stop_and_no_suffix(mistral: Mistral) -> None:
    free = mistral.fim.complete(model=FIM_MODEL, prompt=PROMPT, max_tokens=16, temperature=0)
    text = free.choices[0].message.content
    assert isinstance(text, str)
    if len(text) > 2:  # random weights: stop at whatever the model writes third
        stopped = mistral.fim.complete(
            model=FIM_MODEL, prompt=PROMPT, max_tokens=16, temperature=0, stop=text[2]
        )
        assert stopped.choices[0].message.content == text[: text.index(text[2])]
        assert stopped.choices[0].finish_reason == "stop"


def test_model_without_fim_is_refused(server: LiveServer, mistral: Mistral) -> None:
    with pytest.raises(SDKError) as info:
        mistral.fim.complete(model=DEFAULT_MODEL, prompt=PROMPT, suffix=SUFFIX, max_tokens=4)
    assert info.value.status_code == 400
    body = json.loads(info.value.body)
    assert body["code"] == "unsupported_capability" and body["param"] == "model"
    assert "completion_fim" in body["message"] and DEFAULT_MODEL in body["message"]


def test_bad_requests(server: LiveServer) -> None:
    with server.client() as c:
        too_long = c.post(
            "/v1/fim/completions",
            json={"model": FIM_MODEL, "prompt": PROMPT, "max_tokens": 600},
        )
        assert too_long.status_code == 400
        assert too_long.json()["code"] == "context_length_exceeded"
        assert "512" in too_long.json()["message"]
        unknown = c.post(
            "/v1/fim/completions", json={"model": FIM_MODEL, "prompt": "x", "top_k": 3}
        )
        assert unknown.status_code == 422
        assert httpx.post(f"{server.url}/v1/fim/completions", json={}).status_code == 401
