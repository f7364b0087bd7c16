"""``GET /v1/usage``: rollups equal what clients were told, CSV export, tenant isolation."""

from __future__ import annotations

import csv
import io
import uuid
from typing import Any

import pytest

from levant.access.keys import create_key
from levant.db.tables import Workspace
from tests.conftest import DEFAULT_MODEL, LiveServer

pytestmark = pytest.mark.slow


def totals(server: LiveServer, key: str | None = None) -> dict[str, int]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    body = server.client().get("/v1/usage", headers=headers).json()
    out = {"requests": 0, "prompt_tokens": 0, "completion_tokens": 0}
    for row in body["data"]:
        if row["model"] == DEFAULT_MODEL:
            for k in out:
                out[k] += row[k]
    return out


def test_usage_matches_responses(platform_server: LiveServer) -> None:
    before = totals(platform_server)
    seen: list[dict[str, Any]] = []
    for stream in (False, True):
        r = platform_server.client().post(
            "/v1/chat/completions",
            json={
                "model": DEFAULT_MODEL,
                "messages": [{"role": "user", "content": "Hello"}],
                "max_tokens": 4,
                "stream": stream,
                "temperature": 0,
            },
        )
        if stream:
            import json

            last = [json.loads(x[6:]) for x in r.text.splitlines() if x.startswith("data: {")][-1]
            seen.append(last["usage"])
        else:
            seen.append(r.json()["usage"])
    after = totals(platform_server)
    assert after["requests"] - before["requests"] == 2
    for field in ("prompt_tokens", "completion_tokens"):
        assert after[field] - before[field] == sum(u[field] for u in seen)


def test_usage_csv(platform_server: LiveServer) -> None:
    r = platform_server.client().get("/v1/usage", params={"format": "csv"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert rows and rows[0].keys() >= {"day", "model", "requests", "prompt_tokens"}
    json_rows = platform_server.client().get("/v1/usage").json()["data"]
    assert [int(r["requests"]) for r in rows] == [r["requests"] for r in json_rows]


def test_bad_usage_queries(platform_server: LiveServer) -> None:
    c = platform_server.client()
    r = c.get("/v1/usage", params={"start_date": "2026-02-01", "end_date": "2026-01-01"})
    assert r.status_code == 400 and r.json()["object"] == "error"
    assert c.get("/v1/usage", params={"start_date": "not-a-date"}).status_code == 422
    assert c.get("/v1/usage", params={"format": "xml"}).status_code == 422


def test_another_workspace_sees_none_of_it(platform_server: LiveServer) -> None:
    platform = platform_server.state.platform
    with platform.db.writing() as s:
        default = s.get(Workspace, platform.bootstrap.workspace_id)
        assert default is not None
        other = Workspace(
            organisation_id=default.organisation_id, name=f"other-{uuid.uuid4().hex[:8]}"
        )
        s.add(other)
        s.flush()
        key = create_key(s, platform.secret, workspace_id=other.id, name="b", actor="tests").key
    assert totals(platform_server)["requests"] > 0
    assert totals(platform_server, key) == {
        "requests": 0,
        "prompt_tokens": 0,
        "completion_tokens": 0,
    }
