"""How job arguments and results become bytes.

The default, ``msgpack``, cannot run code when it decodes, so bytes read from
an untrusted Redis are safe to load. ``json`` is slower but readable. ``pickle``
runs arbitrary code on load: it is only used when a user names it, and every
producer and worker must then trust everything that can write to Redis.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import msgspec

from aioqueue.errors import ConfigurationError, SerializationError

__all__ = ["JsonSerializer", "MsgpackSerializer", "Serializer", "get_serializer"]


@runtime_checkable
class Serializer(Protocol):
    name: str

    def dumps(self, value: Any) -> bytes: ...

    def loads(self, data: bytes) -> Any: ...


class MsgpackSerializer:
    """msgspec's MessagePack: fast, compact, and no code runs on decode."""

    name = "msgpack"

    def __init__(self) -> None:
        self._encoder = msgspec.msgpack.Encoder()
        self._decoder = msgspec.msgpack.Decoder()

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot encode {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, ValueError) as exc:
            raise SerializationError(f"cannot decode msgpack: {exc}") from exc


class JsonSerializer:
    """msgspec's JSON: human readable in redis-cli, a little slower."""

    name = "json"

    def __init__(self) -> None:
        self._encoder = msgspec.json.Encoder()
        self._decoder = msgspec.json.Decoder()

    def dumps(self, value: Any) -> bytes:
        try:
            return self._encoder.encode(value)
        except (TypeError, ValueError, OverflowError) as exc:
            raise SerializationError(f"cannot encode {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, ValueError) as exc:
            raise SerializationError(f"cannot decode json: {exc}") from exc


class PickleSerializer:
    """Opt-in pickle: loading runs arbitrary code, so only with a Redis you trust."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        import pickle

        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"cannot pickle {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        import pickle

        try:
            return pickle.loads(data)  # noqa: S301 - opted in by name
        except Exception as exc:
            raise SerializationError(f"cannot unpickle: {exc}") from exc


_BY_NAME: dict[str, type[Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
    "pickle": PickleSerializer,
}


def get_serializer(spec: str | Serializer) -> Serializer:
    """A serializer by name (``msgpack``, ``json``, ``pickle``) or the object itself."""
    if isinstance(spec, str):
        try:
            return _BY_NAME[spec]()
        except KeyError:
            raise ConfigurationError(
                f"unknown serializer {spec!r}; choose one of {sorted(_BY_NAME)}"
            ) from None
    if not isinstance(spec, Serializer):
        raise ConfigurationError(f"{spec!r} has no dumps/loads")
    return spec
