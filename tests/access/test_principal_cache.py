"""The principal cache: hits skip the database, and every change that matters evicts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import update

from levant.access import principal_cache
from levant.access.keys import authenticate_digest, create_key, hash_key, revoke_key
from levant.access.limits.policy import LimitPolicy
from levant.access.limits.workspace import WorkspaceLimits, set_limit
from levant.access.policy import grant, set_residency
from levant.access.principal_cache import PrincipalCache
from levant.access.startup import Platform, open_platform
from levant.config import Settings
from levant.db.tables import ApiKey
from levant.db.types import utcnow


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def platform(tmp_path: Path) -> Iterator[Platform]:
    p = open_platform(Settings(home=tmp_path))
    yield p
    p.close()


def _key(platform: Platform, **kw: object) -> tuple[str, str]:
    with platform.db.writing() as s:
        created = create_key(
            s,
            platform.secret,
            workspace_id=platform.bootstrap.workspace_id,
            name="k",
            actor="tests",
            **kw,  # type: ignore[arg-type]
        )
    return created.info.id, hash_key(created.key, platform.secret)


def _read_and_cache(platform: Platform, cache: PrincipalCache, digest: str) -> None:
    gen = principal_cache.generation()
    with platform.db.writing() as s:
        principal, expires = authenticate_digest(s, digest)
    cache.put(digest, principal, expires, gen)


def test_hit_then_revocation_in_process_evicts_at_once(platform: Platform) -> None:
    cache = PrincipalCache(ttl_s=60)
    key_id, digest = _key(platform)
    _read_and_cache(platform, cache, digest)
    assert cache.get(digest) is not None
    with platform.db.writing() as s:
        revoke_key(s, key_id, actor="tests")
    assert cache.get(digest) is None


@pytest.mark.parametrize("change", ["grant", "residency"])
def test_grant_and_residency_changes_evict(platform: Platform, change: str) -> None:
    cache = PrincipalCache(ttl_s=60)
    _, digest = _key(platform)
    _read_and_cache(platform, cache, digest)
    ws = platform.bootstrap.workspace_id
    with platform.db.writing() as s:
        if change == "grant":
            grant(s, ws, "some-commercial-model", actor="tests")
        else:
            set_residency(s, ws, ["EU"], "zero", actor="tests")
    assert cache.get(digest) is None


def test_rolled_back_change_and_unrelated_writes_keep_entries(platform: Platform) -> None:
    cache = PrincipalCache(ttl_s=60)
    key_id, digest = _key(platform)
    _read_and_cache(platform, cache, digest)
    with pytest.raises(RuntimeError), platform.db.writing() as s:
        revoke_key(s, key_id, actor="tests")
        raise RuntimeError("abort")
    # last_used_at is written by a bulk UPDATE on authentication: not a policy change.
    with platform.db.writing() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(last_used_at=utcnow()))
    assert cache.get(digest) is not None


def test_change_from_another_process_applies_within_ttl(platform: Platform) -> None:
    clock = Clock()
    cache = PrincipalCache(ttl_s=1.0, clock=clock)
    key_id, digest = _key(platform)
    _read_and_cache(platform, cache, digest)
    # Another process (the CLI) revokes: nothing in this process sees the commit.
    with platform.db.writing() as s:
        s.execute(update(ApiKey).where(ApiKey.id == key_id).values(revoked_at=utcnow()))
    clock.t += 0.5
    assert cache.get(digest) is not None
    clock.t += 0.6
    assert cache.get(digest) is None


def test_entry_never_outlives_the_key(platform: Platform) -> None:
    cache = PrincipalCache(ttl_s=60)
    _, digest = _key(platform, expires_at=utcnow() + timedelta(milliseconds=50))
    _read_and_cache(platform, cache, digest)
    assert cache.get(digest) is not None
    import time

    time.sleep(0.1)
    assert cache.get(digest) is None


def test_a_read_overtaken_by_a_commit_is_not_cached(platform: Platform) -> None:
    cache = PrincipalCache(ttl_s=60)
    key_id, digest = _key(platform)
    gen = principal_cache.generation()
    with platform.db.writing() as s:
        principal, expires = authenticate_digest(s, digest)
    with platform.db.writing() as s:
        revoke_key(s, key_id, actor="tests")
    cache.put(digest, principal, expires, gen)
    assert cache.get(digest) is None


def test_ttl_zero_disables(platform: Platform) -> None:
    cache = PrincipalCache(ttl_s=0)
    _, digest = _key(platform)
    _read_and_cache(platform, cache, digest)
    assert cache.get(digest) is None


def test_limit_change_in_process_applies_at_once(platform: Platform) -> None:
    limits = WorkspaceLimits(platform.db, ttl_s=60)
    ws = platform.bootstrap.workspace_id
    assert limits.applied_cached(ws, "k", "m") is None  # nothing read yet: no guess
    limits.applied(ws, "k", "m")
    assert limits.applied_cached(ws, "k", "m") is not None
    with platform.db.writing() as s:
        set_limit(s, ws, actor="tests", policy=LimitPolicy(requests_per_second=1.0))
    limits.invalidate(ws)  # what the console API does after its commit
    assert limits.applied_cached(ws, "k", "m") is None
    assert limits.applied(ws, "k", "m").policy.requests_per_second == 1.0
