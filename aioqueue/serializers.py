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
    """What encodes job arguments and results: any object with these three members.

    Producers and workers must use the same one. Give a custom one to
    ``Queue(serializer=...)`` and ``Worker(serializer=...)``; a worker started by
    ``aioqueue run`` gets it from the ``Worker`` object.

    Attributes:
        name: a short name; ``msgpack``, ``json`` and ``pickle`` are taken.
    """

    name: str

    def dumps(self, value: Any) -> bytes:
        """Encodes ``[args, kwargs]`` of a job, or a result.

        Raises:
            SerializationError: a value it cannot encode (the enqueue writes nothing).
        """
        ...

    def loads(self, data: bytes) -> Any:
        """Decodes what ``dumps`` made. It must not run code: the bytes come from Redis.

        Raises:
            SerializationError: bytes it cannot decode.
        """
        ...


class _MsgspecSerializer:
    """A msgspec codec: fast, and decoding builds plain data, never runs code."""

    name: str

    def __init__(self, encoder: Any, decoder: Any) -> None:
        self._encoder = encoder
        self._decoder = decoder

    def dumps(self, value: Any) -> bytes:
        try:
            data: bytes = self._encoder.encode(value)
        # RecursionError: a value nested deeper than the interpreter's recursion limit
        except (TypeError, ValueError, OverflowError, RecursionError) as exc:
            raise SerializationError(f"cannot encode {type(value).__name__}: {exc}") from exc
        return data

    def loads(self, data: bytes) -> Any:
        try:
            return self._decoder.decode(data)
        except (msgspec.DecodeError, ValueError, RecursionError) as exc:
            raise SerializationError(f"cannot decode {self.name}: {exc}") from exc


class MsgpackSerializer(_MsgspecSerializer):
    """MessagePack: compact and the fastest here; the default (``"msgpack"``).

    Attributes:
        name: ``"msgpack"``.
    """

    name = "msgpack"

    def __init__(self) -> None:
        super().__init__(msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder())


class JsonSerializer(_MsgspecSerializer):
    """JSON: human readable in redis-cli, a little slower (``"json"``).

    Attributes:
        name: ``"json"``.
    """

    name = "json"

    def __init__(self) -> None:
        super().__init__(msgspec.json.Encoder(), msgspec.json.Decoder())


class PickleSerializer:
    """Opt-in pickle: loading runs arbitrary code, so only with a Redis you trust."""

    name = "pickle"

    def dumps(self, value: Any) -> bytes:
        import pickle  # opt-in by name only: see PickleSerializer

        try:
            return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise SerializationError(f"cannot pickle {type(value).__name__}: {exc}") from exc

    def loads(self, data: bytes) -> Any:
        import pickle  # opt-in by name only: see PickleSerializer

        try:
            return pickle.loads(data)  # noqa: S301 - opted in by name
        except Exception as exc:
            raise SerializationError(f"cannot unpickle: {exc}") from exc


_BY_NAME: dict[str, type[Serializer]] = {
    "msgpack": MsgpackSerializer,
    "json": JsonSerializer,
    "pickle": PickleSerializer,
}


def name_of(serializer: Serializer) -> str | None:
    """The name ``get_serializer`` makes this serializer from, if it is a built-in one."""
    return serializer.name if _BY_NAME.get(serializer.name) is type(serializer) else None


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
