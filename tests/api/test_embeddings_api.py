"""``/v1/embeddings`` end to end: the official ``mistralai`` and ``openai`` SDKs, the spec,
and the errors a client can cause. Served from an isolated home holding all-MiniLM-L6-v2
(from the shared test store) and SmolLM2, a chat model that must not embed."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import openai
import pytest
import yaml
from mistralai.client import Mistral
from openai import OpenAI

from levant.config import Settings
from levant.embeddings.output import quantize
from tests.conftest import DEFAULT_MODEL, LiveServer, isolated_home
from tests.embeddings.conftest import EMBEDDING_MODEL, pulled_minilm
from tests.openapi_spec import validate

pytestmark = pytest.mark.slow

TEXTS = ["The cat sits on the mat.", "A cat is sitting on a rug.", "Stock prices fell sharply."]


@pytest.fixture(scope="module")
def server(model_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    from levant.catalog.catalog import load_catalog
    from levant.catalog.pull import pull
    from levant.catalog.store import ModelStore

    local = {"kind": "local", "path": str(pulled_minilm())}
    home, catalog = isolated_home(tmp_path_factory.mktemp("embeddings-home"), model_home)
    entries = yaml.safe_load(catalog.read_text())
    entries["models"].append({"id": EMBEDDING_MODEL, "extra_sources": [local]})
    catalog.write_text(yaml.safe_dump(entries))
    settings = Settings(home=home, catalog_path=catalog)
    pull(load_catalog(settings).get(EMBEDDING_MODEL), ModelStore(settings))
    live = LiveServer(settings, preload=[EMBEDDING_MODEL])
    live.start()
    yield live
    live.stop()


@pytest.fixture(scope="module")
def mistral(server: LiveServer) -> Mistral:
    return Mistral(api_key=server.api_key, server_url=server.url)


@pytest.fixture(scope="module")
def openai_client(server: LiveServer) -> OpenAI:
    return OpenAI(api_key=server.api_key, base_url=f"{server.url}/v1")


@pytest.fixture(scope="module")
def reference(server: LiveServer) -> np.ndarray:
    """Float vectors of TEXTS, straight from the service."""
    service = server.state.registry.loaded()[0]
    out: np.ndarray = service.embed_now(service.tokenize_now(TEXTS))
    return out


def test_mistral_sdk(mistral: Mistral, reference: np.ndarray) -> None:
    res = mistral.embeddings.create(model=EMBEDDING_MODEL, inputs=TEXTS)
    assert res.object == "list" and res.model == EMBEDDING_MODEL
    assert [d.index for d in res.data] == [0, 1, 2]
    got = np.array([d.embedding for d in res.data], dtype=np.float32)
    np.testing.assert_allclose(got, reference, atol=1e-6)
    # The two sentences that say the same thing are the closest pair.
    sims = got @ got.T
    assert sims[0, 1] > sims[0, 2] and sims[0, 1] > sims[1, 2]
    assert res.usage.prompt_tokens > len(TEXTS) * 2  # [CLS] and [SEP] count
    assert res.usage.total_tokens == res.usage.prompt_tokens
    assert res.usage.completion_tokens == 0


def test_mistral_sdk_single_string_and_dtypes(mistral: Mistral, reference: np.ndarray) -> None:
    one = mistral.embeddings.create(model=EMBEDDING_MODEL, inputs=TEXTS[0])
    assert len(one.data) == 1 and len(one.data[0].embedding or []) == 384
    for dtype in ("int8", "uint8", "binary", "ubinary"):
        res = mistral.embeddings.create(model=EMBEDDING_MODEL, inputs=TEXTS, output_dtype=dtype)
        got = np.array([d.embedding for d in res.data])
        np.testing.assert_array_equal(got, quantize(reference, dtype))  # type: ignore[arg-type]
        assert got.shape[1] == (48 if dtype.endswith("binary") else 384)


def test_openai_sdk_float_and_base64(openai_client: OpenAI, reference: np.ndarray) -> None:
    # The SDK asks for base64 by default and decodes it to floats itself.
    default = openai_client.embeddings.create(model=EMBEDDING_MODEL, input=TEXTS)
    np.testing.assert_allclose(
        np.array([d.embedding for d in default.data], dtype=np.float32), reference, atol=0
    )
    floats = openai_client.embeddings.create(
        model=EMBEDDING_MODEL, input=TEXTS[1], encoding_format="float"
    )
    np.testing.assert_allclose(floats.data[0].embedding, reference[1], atol=1e-6)
    assert floats.usage.prompt_tokens == floats.usage.total_tokens > 0
    raw = openai_client.embeddings.with_raw_response.create(
        model=EMBEDDING_MODEL, input=TEXTS, encoding_format="base64"
    )
    encoded = json.loads(raw.text)["data"][2]["embedding"]
    np.testing.assert_array_equal(np.frombuffer(base64.b64decode(encoded), "<f4"), reference[2])


def test_response_matches_the_spec(server: LiveServer) -> None:
    with server.client() as c:
        for extra in ({}, {"output_dtype": "int8"}, {"output_dimension": 384}):
            r = c.post("/v1/embeddings", json={"model": EMBEDDING_MODEL, "input": TEXTS, **extra})
            assert r.status_code == 200, r.text
            validate(r.json(), "EmbeddingResponse")


def _error(
    server: LiveServer, body: dict[str, object], path: str = "/v1/embeddings"
) -> dict[str, str]:
    with server.client() as c:
        r = c.post(path, json=body)
    assert r.status_code == 400, r.text
    error: dict[str, str] = r.json()
    return error


def test_empty_input_list(server: LiveServer) -> None:
    err = _error(server, {"model": EMBEDDING_MODEL, "input": []})
    assert err["param"] == "input" and "empty" in err["message"]


def test_too_long_input_names_both_numbers(server: LiveServer) -> None:
    err = _error(server, {"model": EMBEDDING_MODEL, "input": ["short", "word " * 300]})
    assert err["code"] == "context_length_exceeded" and err["param"] == "input[1]"
    assert "302 tokens" in err["message"] and "256 tokens" in err["message"]


def test_output_dimension_unsupported(server: LiveServer, openai_client: OpenAI) -> None:
    err = _error(server, {"model": EMBEDDING_MODEL, "input": "x", "output_dimension": 128})
    assert err["param"] == "output_dimension" and "384" in err["message"]
    with pytest.raises(openai.BadRequestError) as info:
        openai_client.embeddings.create(model=EMBEDDING_MODEL, input="x", dimensions=64)
    assert "output_dimension" in str(info.value)


def test_chat_model_cannot_embed(server: LiveServer, openai_client: OpenAI) -> None:
    err = _error(server, {"model": DEFAULT_MODEL, "input": "hello"})
    assert err["code"] == "unsupported_capability" and "embedding" in err["message"]
    with pytest.raises(openai.BadRequestError):
        openai_client.embeddings.create(model=DEFAULT_MODEL, input="hello")


def test_embedding_model_cannot_chat_or_fim(server: LiveServer) -> None:
    chat = {"model": EMBEDDING_MODEL, "messages": [{"role": "user", "content": "hi"}]}
    err = _error(server, chat, "/v1/chat/completions")
    assert err["code"] == "unsupported_capability" and "completion_chat" in err["message"]
    fim = {"model": EMBEDDING_MODEL, "prompt": "def f():"}
    err = _error(server, fim, "/v1/fim/completions")
    assert "completion_fim" in err["message"]


def test_unknown_fields_and_bad_dtypes_are_refused(server: LiveServer) -> None:
    with server.client() as c:
        for body in (
            {"model": EMBEDDING_MODEL, "input": "x", "output_dtype": "float16"},
            {"model": EMBEDDING_MODEL, "input": "x", "truncate": True},
            {"model": EMBEDDING_MODEL, "input": [[1, 2, 3]]},
        ):
            assert c.post("/v1/embeddings", json=body).status_code == 422


def test_models_list_shows_the_embedding_model(server: LiveServer) -> None:
    with server.client() as c:
        ids = [m["id"] for m in c.get("/v1/models").json()["data"]]
    assert EMBEDDING_MODEL in ids and DEFAULT_MODEL in ids
