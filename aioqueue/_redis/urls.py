"""Multi-host URLs (``redis+cluster://``, ``redis+sentinel://``): the parts both share."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

from aioqueue.errors import ConfigurationError


@dataclass
class MultiHostURL:
    """``scheme://[user:pass@]h1:p1,h2:p2/path?query`` split into what clients need."""

    parts: SplitResult
    hosts: list[tuple[str, int]]
    auth: dict[str, Any] = field(default_factory=dict)  # username, password, ssl


def split_multi_host(url: str, schemes: dict[str, bool], kind: str) -> MultiHostURL:
    """Checks the scheme (``schemes`` maps each to whether it means TLS) and splits the
    host list and credentials; a clear ``ConfigurationError`` for anything malformed."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in schemes:
        raise ConfigurationError(f"not a {kind} URL: {scheme}://")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    hosts: list[tuple[str, int]] = []
    for item in hostlist.split(","):
        host, _, port = item.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"{kind} URL needs host:port items, got {item!r}")
        hosts.append((host.strip("[]"), int(port)))
    auth: dict[str, Any] = {}
    if userinfo:
        user, has_password, password = userinfo.partition(":")
        auth["username"] = unquote(user) or None
        auth["password"] = unquote(password) if has_password else None
    if schemes[scheme]:
        auth["ssl"] = True
    return MultiHostURL(parts, hosts, auth)
