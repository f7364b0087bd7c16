"""pull(): get a catalogued model's files into the store, trying its sources in order.

For each file: reuse the blob if the store has it, else try each source until
one yields bytes that verify. A resumed transfer that fails verification is
restarted once from scratch. Idempotent: a complete model returns at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from levant.catalog.card import ModelCard, Source, WeightFile
from levant.catalog.progress import NullProgress, Progress
from levant.catalog.sources import Fetcher, FetchOptions, SourceUnavailable, fetcher_for
from levant.catalog.store import ChecksumMismatch, ModelStore


class PullFailed(SourceUnavailable):
    """No source could provide a file; ``reasons`` says why, one line per source tried."""

    def __init__(self, card: ModelCard, file: WeightFile, reasons: list[str]) -> None:
        self.card = card
        self.file = file
        self.reasons = reasons
        if not reasons:
            message = f"Cannot pull {card.id}: the catalogue lists no source for it"
        else:
            lines = "".join(f"\n  - {why}" for why in reasons)
            message = f"Cannot pull {card.id} ({file.path}) from any source:{lines}"
        super().__init__(message)


def pull(
    card: ModelCard,
    store: ModelStore,
    *,
    extra_sources: Sequence[Source] = (),
    progress: Progress | None = None,
    options: FetchOptions | None = None,
    verify: bool = False,
) -> Path:
    """Make ``card`` complete in ``store``; returns its model directory.

    ``extra_sources`` are tried before the card's own. With ``verify``, an
    existing copy is re-hashed first and damaged files are fetched again.
    """
    progress = progress or NullProgress()
    existing = store.path(card)
    if existing is not None and not (verify and store.verify(card)):
        return existing

    fetchers = [fetcher_for(s, store.settings, options) for s in (*extra_sources, *card.sources)]
    for file in card.files:
        if not store.has_blob(file, rehash=verify):
            _fetch_file(card, file, store, fetchers, progress, verify=verify)
        store.link(card, file)
    directory = store.finalize(card)
    for fetcher in fetchers:
        fetcher.cleanup()
    return directory


def _fetch_file(
    card: ModelCard,
    file: WeightFile,
    store: ModelStore,
    fetchers: list[Fetcher],
    progress: Progress,
    *,
    verify: bool,
) -> None:
    reasons: list[str] = []
    with store.staging(file) as partial:
        if not verify and store.has_blob(file):  # another pull finished it while we waited
            return
        for fetcher in fetchers:
            for attempt in range(2):
                resumed = 0
                progress.note(f"{file.path}: trying {fetcher.describe()}")
                try:
                    resumed = fetcher.fetch(card, file, partial, progress)
                    progress.begin(f"verifying {file.path}", total=file.size)
                    store.commit(file, partial, on_bytes=progress.advance)
                    return
                except SourceUnavailable as exc:  # its message names the source
                    reasons.append(str(exc))
                    progress.note(str(exc))
                    break
                except ChecksumMismatch as exc:  # commit() has deleted the partial file
                    if resumed and attempt == 0:
                        progress.note(f"{file.path}: resumed transfer did not verify; restarting")
                        continue
                    reasons.append(f"{fetcher.describe()}: {exc}")
                    progress.note(reasons[-1])
                    break
    raise PullFailed(card, file, reasons)
