"""An incremental ``multipart/form-data`` parser: bytes in, parts out, nothing buffered whole.

``MultipartParser.feed(chunk)`` returns events as the body arrives: ``PartStart``
(the part's headers), ``PartData`` (a slice of its body) and ``PartEnd``; ``close()``
checks the body ended with the closing delimiter. At most one delimiter's length
of a part is held back between chunks (it may be the start of the delimiter), so
a 512 MiB upload is never in memory. Errors are ``MultipartError``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_HEADER_BYTES = 16 * 1024
"""A part's header block larger than this is refused."""

_BOUNDARY = re.compile(rb"^[0-9A-Za-z'()+_,\-./:=? ]{1,70}$")


class MultipartError(ValueError):
    """The body is not well-formed multipart/form-data."""


@dataclass(frozen=True, slots=True)
class PartStart:
    name: str
    filename: str | None
    content_type: str | None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PartData:
    data: bytes


@dataclass(frozen=True, slots=True)
class PartEnd:
    pass


Event = PartStart | PartData | PartEnd


def _params(value: str) -> tuple[str, dict[str, str]]:
    """``form-data; name="file"; filename="a b.jsonl"`` → ("form-data", {name, filename})."""
    parts = re.findall(r';\s*([^=;\s]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)', value)
    head = value.split(";", 1)[0].strip().lower()
    params: dict[str, str] = {}
    for key, raw in parts:
        raw = raw.strip()
        if len(raw) >= 2 and raw[0] == raw[-1] == '"':
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[key.lower()] = raw
    return head, params


def boundary_of(content_type: str) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type, or ``MultipartError``."""
    kind, params = _params(content_type)
    if kind != "multipart/form-data":
        raise MultipartError("expected a multipart/form-data body")
    boundary = params.get("boundary", "").encode("latin-1", "replace")
    if not _BOUNDARY.match(boundary):
        raise MultipartError("multipart/form-data without a valid boundary")
    return boundary


def _part_start(block: bytes) -> PartStart:
    headers: dict[str, str] = {}
    for line in block.decode("utf-8", "replace").split("\r\n"):
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise MultipartError("malformed part header")
        headers[name.strip().lower()] = value.strip()
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise MultipartError("part without Content-Disposition")
    kind, params = _params(disposition)
    if kind != "form-data" or "name" not in params:
        raise MultipartError("part is not form-data with a name")
    return PartStart(
        name=params["name"],
        filename=params.get("filename"),
        content_type=headers.get("content-type"),
        headers=headers,
    )


class MultipartParser:
    def __init__(self, boundary: bytes) -> None:
        self._first = b"--" + boundary
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b""
        self._state = "preamble"  # preamble | after_delimiter | headers | body | done

    @property
    def done(self) -> bool:
        return self._state == "done"

    def feed(self, chunk: bytes) -> list[Event]:
        self._buffer += chunk
        events: list[Event] = []
        while self._step(events):
            pass
        return events

    def close(self) -> None:
        if self._state != "done":
            raise MultipartError("multipart body ended before its closing delimiter")

    def _step(self, events: list[Event]) -> bool:
        """Advance as far as the buffer allows; True while progress is possible."""
        buf = self._buffer
        if self._state == "preamble":
            # The first delimiter may start the body (no CRLF before it) or follow a preamble.
            if buf.startswith(self._first):
                self._buffer = buf[len(self._first) :]
                self._state = "after_delimiter"
                return True
            at = buf.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1
                self._buffer = buf[-keep:] if len(buf) > keep else buf
                return False
            self._buffer = buf[at + len(self._delimiter) :]
            self._state = "after_delimiter"
            return True
        if self._state == "after_delimiter":
            if len(buf) < 2:
                return False
            if buf.startswith(b"--"):
                self._state = "done"
                self._buffer = b""
                return False
            # Transport padding (spaces/tabs) may precede the CRLF.
            stripped = buf.lstrip(b" \t")
            if len(stripped) < 2:
                return False
            if not stripped.startswith(b"\r\n"):
                raise MultipartError("malformed multipart delimiter line")
            self._buffer = stripped[2:]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                if buf.startswith(b"\r\n"):  # a part with no headers at all
                    raise MultipartError("part without Content-Disposition")
                if len(buf) > MAX_HEADER_BYTES:
                    raise MultipartError("part headers too large")
                return False
            if end > MAX_HEADER_BYTES:
                raise MultipartError("part headers too large")
            events.append(_part_start(buf[:end]))
            self._buffer = buf[end + 4 :]
            self._state = "body"
            return True
        if self._state == "body":
            at = buf.find(self._delimiter)
            if at >= 0:
                if at:
                    events.append(PartData(buf[:at]))
                events.append(PartEnd())
                self._buffer = buf[at + len(self._delimiter) :]
                self._state = "after_delimiter"
                return True
            # Hold back what could be the start of a delimiter split across chunks.
            keep = len(self._delimiter) - 1
            if len(buf) > keep:
                events.append(PartData(buf[:-keep]))
                self._buffer = buf[-keep:]
            return False
        return False  # done: anything after the closing delimiter is epilogue
