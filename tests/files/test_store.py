"""FileStore: blobs appear only when complete; a body over its limit leaves nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from levant.files.store import FileStore, TooLarge


def test_commit_names_the_blob_by_sha256(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with store.writer() as w:
        w.write(b'{"a": 1}\n')
        w.write(b'{"b": 2}')
        sha = w.commit()
    assert sha == hashlib.sha256(b'{"a": 1}\n{"b": 2}').hexdigest()
    assert store.blob_path(sha).read_bytes() == b'{"a": 1}\n{"b": 2}'
    assert (w.size, w.num_lines) == (17, 2)
    assert list(store.tmp_dir.iterdir()) == []


def test_same_content_is_one_blob(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    a = store.put_bytes(b"same\n")
    b = store.put_bytes(b"same\n")
    assert a == b
    assert len(list(store.blobs_dir.iterdir())) == 1
    assert list(store.tmp_dir.iterdir()) == []


def test_over_the_limit_leaves_nothing(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    w = store.writer(limit=10)
    w.write(b"12345")
    with pytest.raises(TooLarge):
        w.write(b"678901")
    assert list(store.tmp_dir.iterdir()) == []
    assert not store.blobs_dir.exists() or list(store.blobs_dir.iterdir()) == []


def test_an_abandoned_writer_is_discarded(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    with pytest.raises(RuntimeError), store.writer() as w:
        w.write(b"partial")
        raise RuntimeError("client went away")
    assert list(store.tmp_dir.iterdir()) == []


def test_sweep_removes_stale_partials(tmp_path: Path) -> None:
    store = FileStore(tmp_path)
    w = store.writer()
    w.write(b"left behind by a crash")
    assert store.sweep_partials(older_than_s=3600) == 0
    assert store.sweep_partials(older_than_s=-1) == 1
    assert list(store.tmp_dir.iterdir()) == []
    w.discard()
