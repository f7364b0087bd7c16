"""The catalogue: the model cards Levant knows, looked up by id or alias.

Built from ``catalog.yaml`` (shipped with the package) merged with an optional
user file (``settings.catalog_path``). Knows nothing about weights on disk;
that is the store's business.

Merge rules for the user file (``models:`` list, same shape as the built-in):

* an entry whose ``id`` is a built-in card overrides that card field by field
  (a field given replaces the built-in value whole, lists included);
* any other entry is a new card and must be complete;
* ``extra_sources:`` on either kind of entry is put *before* the card's
  sources, so a local mirror is tried first without repeating the others.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from levant.catalog.card import ModelCard
from levant.config import Settings

_BUILTIN = "catalog.yaml"


class ModelNotFound(LookupError):
    """No card has this id or alias."""

    def __init__(self, name: str, known: Iterable[str] = (), suggestion: str | None = None) -> None:
        self.name = name
        message = f"Unknown model '{name}'."
        if suggestion is not None:
            message += f" Did you mean '{suggestion}'?"
        if known := sorted(known):
            message += f" Known models: {', '.join(known)}."
        super().__init__(message)


class CatalogError(ValueError):
    """A catalogue file is missing, unreadable or describes an invalid card."""


class Catalog:
    """An ordered set of cards with unique ids and aliases."""

    def __init__(self, cards: Iterable[ModelCard]) -> None:
        self._cards = list(cards)
        self._by_name: dict[str, ModelCard] = {}
        for card in self._cards:
            for name in (card.id, *card.aliases):
                other = self._by_name.get(name)
                if other is not None and other is not card:
                    raise CatalogError(
                        f"'{name}' names both '{other.id}' and '{card.id}' in the catalogue"
                    )
                self._by_name[name] = card

    def cards(self) -> list[ModelCard]:
        return list(self._cards)

    def get(self, name: str) -> ModelCard:
        """The card whose id or alias is ``name``; raises :class:`ModelNotFound`."""
        card = self._by_name.get(name)
        if card is None:
            close = difflib.get_close_matches(name, list(self._by_name), n=1)
            suggestion = self._by_name[close[0]].id if close else None
            raise ModelNotFound(name, (c.id for c in self._cards), suggestion)
        return card

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._cards)


def load_catalog(settings: Settings) -> Catalog:
    """The built-in catalogue merged with ``settings.catalog_path`` when set."""
    text = resources.files("levant.catalog").joinpath(_BUILTIN).read_text(encoding="utf-8")
    entries = _entries(yaml.safe_load(text), origin=f"built-in {_BUILTIN}")
    if settings.catalog_path is not None:
        entries = merge_entries(entries, read_catalog_file(settings.catalog_path))
    return Catalog(_to_card(entry) for entry in entries)


def read_catalog_file(path: Path) -> list[dict[str, Any]]:
    """The raw entries of a user catalogue file (validated later, after merging)."""
    try:
        text = path.expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(f"Cannot read catalogue file {path}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError(f"Catalogue file {path} is not valid YAML: {exc}") from exc
    return _entries(data, origin=str(path))


def merge_entries(
    base: list[dict[str, Any]], overrides: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Apply the module's merge rules; order is built-ins first, then new cards."""
    merged = {entry["id"]: dict(entry) for entry in base}
    for entry in overrides:
        current = merged.get(entry["id"], {})
        merged[entry["id"]] = _override(current, entry)
    return list(merged.values())


def _override(current: Mapping[str, Any], entry: Mapping[str, Any]) -> dict[str, Any]:
    result = {**current, **{k: v for k, v in entry.items() if k != "extra_sources"}}
    extra = entry.get("extra_sources") or []
    if not isinstance(extra, list):
        raise CatalogError(f"'extra_sources' of '{entry['id']}' must be a list")
    result["sources"] = [*extra, *(result.get("sources") or [])]
    return result


def _entries(data: object, *, origin: str) -> list[dict[str, Any]]:
    if data is None:
        return []
    if isinstance(data, dict):
        data = data.get("models", [])
    if not isinstance(data, list):
        raise CatalogError(f"{origin}: expected a 'models:' list of model cards")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str):
            raise CatalogError(f"{origin}: entry #{i + 1} is not a mapping with an 'id'")
    return [dict(entry) for entry in data]


def _to_card(entry: Mapping[str, Any]) -> ModelCard:
    try:
        return ModelCard.model_validate(entry)
    except ValidationError as exc:
        raise CatalogError(f"Invalid model card '{entry.get('id')}': {exc}") from exc
