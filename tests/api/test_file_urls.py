"""``GET /v1/files/{id}/url``: signed download links (Mistral's ``FileSignedURL``)."""

from __future__ import annotations

import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest

from levant.api.routes import files as files_route
from levant.files.signed_url import BadLink, ExpiredLink, FileLink, sign, verify
from tests.api.test_files import jsonl, new_workspace_key, sdk, server  # noqa: F401 (fixture)
from tests.conftest import LiveServer
from tests.openapi_spec import validate


def test_sign_and_verify() -> None:
    link = FileLink("f", "w", "k", 100)
    sig = sign(b"s" * 32, link)
    verify(b"s" * 32, link, sig, 99)
    with pytest.raises(ExpiredLink):
        verify(b"s" * 32, link, sig, 100)
    with pytest.raises(BadLink):
        verify(b"t" * 32, link, sig, 99)
    with pytest.raises(BadLink):
        verify(b"s" * 32, FileLink("f", "w", "k", 10_000), sig, 99)


def upload(server: LiveServer) -> tuple[str, bytes]:  # noqa: F811
    content = jsonl(2, tag=uuid.uuid4().hex)
    up = sdk(server).files.upload(
        file={"file_name": "a.jsonl", "content": content}, purpose="batch"
    )
    return up.id, content


def test_signed_url_downloads_without_a_key_until_it_expires(
    server: LiveServer,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    file_id, content = upload(server)
    res = sdk(server).files.get_signed_url(file_id=file_id, expiry=2)
    validate(res.model_dump(by_alias=True), "FileSignedURL")
    raw = server.client().get(f"/v1/files/{file_id}/url").json()
    validate(raw, "FileSignedURL")
    assert res.url.startswith(server.url)
    got = httpx.get(res.url)  # no key
    assert got.status_code == 200 and got.content == content

    issued = files_route._now()
    monkeypatch.setattr(files_route, "_now", lambda: issued + 2 * 3600 + 5)
    late = httpx.get(res.url)
    assert late.status_code == 403, late.text
    body = late.json()
    assert body["object"] == "error" and body["code"] == "url_expired"


def test_tampered_links_are_refused(server: LiveServer) -> None:  # noqa: F811
    file_id, _ = upload(server)
    other_id, _ = upload(server)
    url = sdk(server).files.get_signed_url(file_id=file_id).url
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    bad_sig = {
        **query,
        "signature": ("0" if query["signature"][0] != "0" else "1") + query["signature"][1:],
    }
    longer = {**query, "expires": str(int(query["expires"]) + 3600)}
    for path, q in [
        (parts.path, bad_sig),
        (parts.path, longer),
        (parts.path.replace(file_id, other_id), query),  # the signature names one file
    ]:
        r = httpx.get(f"{server.url}{path}?{urlencode(q)}")
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "invalid_signature"


def test_other_workspace_file_is_404_and_bad_expiry_422(server: LiveServer) -> None:  # noqa: F811
    file_id, _ = upload(server)
    other = httpx.Client(
        base_url=server.url, headers={"authorization": f"Bearer {new_workspace_key(server)}"}
    )
    r = other.get(f"/v1/files/{file_id}/url")
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    for expiry in (0, 169):
        r = server.client().get(f"/v1/files/{file_id}/url", params={"expiry": expiry})
        assert r.status_code == 422 and r.json()["param"] == "expiry"


def test_deleted_file_link_is_404_and_zero_retention_refused(server: LiveServer) -> None:  # noqa: F811
    file_id, _ = upload(server)
    url = sdk(server).files.get_signed_url(file_id=file_id).url
    sdk(server).files.delete(file_id=file_id)
    r = httpx.get(url)
    assert r.status_code == 404 and r.json()["code"] == "file_not_found"
    zero = httpx.Client(
        base_url=server.url,
        headers={"authorization": f"Bearer {new_workspace_key(server, retention='zero')}"},
    )
    r = zero.get(f"/v1/files/{uuid.uuid4()}/url")
    assert r.status_code == 403 and r.json()["code"] == "zero_retention"


def test_link_stops_working_when_the_workspace_turns_zero_retention(
    server: LiveServer,  # noqa: F811
) -> None:
    from levant.access.policy import set_residency

    key = new_workspace_key(server)
    client = sdk(server, key)
    up = client.files.upload(file={"file_name": "z.jsonl", "content": b"{}\n"}, purpose="batch")
    url = client.files.get_signed_url(file_id=up.id).url
    assert httpx.get(url).status_code == 200
    workspace = parse_qs(urlsplit(url).query)["workspace"][0]
    with server.state.platform.db.writing() as s:
        set_residency(s, workspace, None, "zero", actor="tests")
    r = httpx.get(url)
    assert r.status_code == 403 and r.json()["code"] == "zero_retention"
