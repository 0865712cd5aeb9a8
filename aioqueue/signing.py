"""Optional HMAC signing of job payloads.

With a shared ``signing_key``, producers prefix each payload with an
HMAC-SHA256 of it, and workers that hold the key run only jobs whose signature
matches: a job written into Redis by anyone else is set aside, never run.
A worker without a key runs signed and unsigned jobs alike.
"""

from __future__ import annotations

import hashlib
import hmac

from aioqueue.errors import SignatureError

MAGIC = b"AQS1"
_DIGEST = 32
HEADER = len(MAGIC) + _DIGEST


def _key(key: bytes | str) -> bytes:
    return key.encode() if isinstance(key, str) else key


def sign(key: bytes | str, payload: bytes) -> bytes:
    return MAGIC + hmac.new(_key(key), payload, hashlib.sha256).digest() + payload


def verify(key: bytes | str, raw: bytes | None) -> bytes:
    """The payload inside ``raw`` if its signature matches ``key``."""
    if raw is None or not raw.startswith(MAGIC):
        raise SignatureError("job is not signed")
    digest, payload = raw[len(MAGIC) : HEADER], raw[HEADER:]
    expected = hmac.new(_key(key), payload, hashlib.sha256).digest()
    if not hmac.compare_digest(digest, expected):
        raise SignatureError("job signature does not match the signing key")
    return payload


def strip(raw: bytes) -> bytes:
    """The payload without its signature (for readers that do not verify)."""
    return raw[HEADER:] if raw.startswith(MAGIC) else raw
