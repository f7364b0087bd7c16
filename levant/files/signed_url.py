"""Signed download links for stored files (``GET /v1/files/{id}/url``).

A link names the file, its workspace, the key that asked (a ``user``-visibility file
stays its owner's), and when it expires, and carries an HMAC-SHA256 of all four under a
key derived from the server secret (``levant.access.secret``). Whoever holds the link may
download the file without an API key until it expires; changing any part of it breaks
the signature. Nothing is stored: the server checks links by recomputing the MAC.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

_PURPOSE = b"levant/files/signed-url/v1"


@dataclass(frozen=True, slots=True)
class FileLink:
    file_id: str
    workspace_id: str
    key_id: str
    expires: int
    """Unix time (seconds) after which the link no longer works."""


class BadLink(ValueError):
    """The signature does not match: the link was altered or not issued here."""


class ExpiredLink(ValueError):
    """The link was issued here but its time is over."""


def _key(secret: bytes) -> bytes:
    return hmac.new(secret, _PURPOSE, hashlib.sha256).digest()


def sign(secret: bytes, link: FileLink) -> str:
    message = "\n".join((link.file_id, link.workspace_id, link.key_id, str(link.expires))).encode()
    return hmac.new(_key(secret), message, hashlib.sha256).hexdigest()


def verify(secret: bytes, link: FileLink, signature: str, now: float) -> None:
    """Raise BadLink unless ``signature`` is ``link``'s, then ExpiredLink past its time."""
    if not hmac.compare_digest(sign(secret, link), signature):
        raise BadLink("invalid signature")
    if now >= link.expires:
        raise ExpiredLink("link expired")
