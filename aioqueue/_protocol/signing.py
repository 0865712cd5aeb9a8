"""Optional HMAC signing of jobs.

With a shared ``signing_key``, producers prefix each payload with an
HMAC-SHA256 of what identifies the job: its queue, its id, its lock field and
its payload. Workers that hold the key run only jobs whose signature matches
all four, so a job written into Redis by anyone else, or a signed payload
copied under another id, onto another queue or with its lock changed, is set
aside, never run. A worker without a key runs signed and unsigned jobs alike.

A key may be a list of keys for rotation: jobs are signed with the first and
verified against each (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from typing import TypeAlias

from aioqueue.errors import ConfigurationError, SignatureError

__all__ = ["SigningKeys", "Signer", "strip"]

SigningKeys: TypeAlias = bytes | str | Sequence[bytes | str]

MAGIC = b"AQS2"
OLD_MAGIC = b"AQS1"  # payload-only signatures of earlier versions: replayable, refused
_DIGEST = 32
HEADER = len(MAGIC) + _DIGEST


def _keys(keys: SigningKeys) -> list[bytes]:
    given = [keys] if isinstance(keys, bytes | str) else list(keys)
    out = [k.encode() if isinstance(k, str) else k for k in given]
    if not out or not all(isinstance(k, bytes) and k for k in out):
        raise ConfigurationError("signing_key: a non-empty key, or a list of non-empty keys")
    return out


def _message(queue: str, job_id: str, lock: bytes | str) -> bytes:
    """What is signed besides the payload, each part length-prefixed (no ambiguity)."""
    q, i = queue.encode(), job_id.encode()
    u = lock.encode() if isinstance(lock, str) else lock
    return struct.pack(">III", len(q), len(i), len(u)) + q + i + u


class Signer:
    """Signs with the first of ``keys``, verifies against any of them."""

    def __init__(self, keys: SigningKeys) -> None:
        # one keyed HMAC per key, copied per message: the key schedule is paid once
        self._macs = [hmac.new(key, digestmod=hashlib.sha256) for key in _keys(keys)]

    def _digest(
        self, mac: hmac.HMAC, queue: str, job_id: str, lock: bytes | str, payload: bytes
    ) -> bytes:
        h = mac.copy()
        h.update(_message(queue, job_id, lock))
        h.update(payload)
        return h.digest()

    def sign(self, payload: bytes, *, queue: str, job_id: str, lock: bytes | str = b"") -> bytes:
        return MAGIC + self._digest(self._macs[0], queue, job_id, lock, payload) + payload

    def verify(
        self, raw: bytes | None, *, queue: str, job_id: str, lock: bytes | str = b""
    ) -> bytes:
        """The payload inside ``raw`` if it was signed for this queue, id and lock."""
        if raw is not None and raw.startswith(OLD_MAGIC):
            raise SignatureError(
                "job is signed with the payload-only scheme of an older aioqueue,"
                " which a copy could replay: enqueue it again"
            )
        if raw is None or not raw.startswith(MAGIC):
            raise SignatureError("job is not signed")
        digest, payload = raw[len(MAGIC) : HEADER], raw[HEADER:]
        for mac in self._macs:
            if hmac.compare_digest(digest, self._digest(mac, queue, job_id, lock, payload)):
                return payload
        raise SignatureError(
            "job signature does not match its queue, id, lock and payload under any signing key"
        )


def strip(raw: bytes) -> bytes:
    """The payload without its signature (for readers that do not verify)."""
    return raw[HEADER:] if raw.startswith((MAGIC, OLD_MAGIC)) else raw
