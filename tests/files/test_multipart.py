"""The streaming multipart parser: any split of the body gives the same parts; bad bodies fail."""

from __future__ import annotations

import itertools

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from levant.files.multipart import (
    MultipartError,
    MultipartParser,
    PartData,
    PartEnd,
    PartStart,
    boundary_of,
)


def _encode(fields: dict[str, str], filename: str, content: bytes) -> tuple[bytes, str]:
    request = httpx.Request(
        "POST",
        "http://x/",
        data=fields,
        files={"file": (filename, content, "application/octet-stream")},
    )
    return request.read(), request.headers["content-type"]


def _parse(body: bytes, content_type: str, cuts: list[int]) -> list[tuple[str, str | None, bytes]]:
    parser = MultipartParser(boundary_of(content_type))
    parts: list[tuple[str, str | None, bytes]] = []
    current: PartStart | None = None
    data = bytearray()
    edges = [0, *sorted(c for c in cuts if 0 < c < len(body)), len(body)]
    for start, end in itertools.pairwise(edges):
        for event in parser.feed(body[start:end]):
            if isinstance(event, PartStart):
                current, data = event, bytearray()
            elif isinstance(event, PartData):
                data += event.data
            elif isinstance(event, PartEnd):
                assert current is not None
                parts.append((current.name, current.filename, bytes(data)))
    parser.close()
    return parts


CONTENT = b"--not-the-boundary\r\n\r\n" + bytes(range(256)) * 40 + b"\r\n--"


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=12_000), max_size=40))
def test_any_chunking_gives_the_same_parts(cuts: list[int]) -> None:
    body, content_type = _encode({"purpose": "batch"}, "in put.jsonl", CONTENT)
    parts = _parse(body, content_type, cuts)
    assert parts == [("purpose", None, b"batch"), ("file", "in put.jsonl", CONTENT)]


def test_one_byte_at_a_time() -> None:
    body, content_type = _encode({"purpose": "fine-tune"}, "a.jsonl", b"x\r\ny\r\n")
    parts = _parse(body, content_type, list(range(len(body))))
    assert parts[1] == ("file", "a.jsonl", b"x\r\ny\r\n")


def test_data_is_not_held_back_beyond_one_delimiter() -> None:
    body, content_type = _encode({}, "a.bin", b"z" * 100_000)
    parser = MultipartParser(boundary_of(content_type))
    fed = parser.feed(body[:60_000])
    held = 60_000 - sum(len(e.data) for e in fed if isinstance(e, PartData))
    header = body.index(b"\r\n\r\n") + 4
    assert held - header < 100


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "multipart/form-data", "multipart/form-data; boundary=" + "x" * 71],
)
def test_bad_content_types(content_type: str) -> None:
    with pytest.raises(MultipartError):
        boundary_of(content_type)


def test_truncated_body_fails_on_close() -> None:
    body, content_type = _encode({}, "a.txt", b"hello")
    parser = MultipartParser(boundary_of(content_type))
    parser.feed(body[:-10])
    with pytest.raises(MultipartError):
        parser.close()


def test_part_without_disposition_fails() -> None:
    parser = MultipartParser(b"b")
    with pytest.raises(MultipartError):
        parser.feed(b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n")
