"""Outbound HTTP that cannot be pointed at the inside: loopback, private, link-local, metadata, …

The host is resolved once, every address it resolves to is checked, and the connection goes to the
checked address (the name is kept for the Host header and TLS), so a DNS answer that changes between
the check and the connection (rebinding) cannot slip through.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

BLOCKED: tuple[IPNetwork, ...] = tuple(
    ipaddress.ip_network(n)
    for n in (
        "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
        "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24",
        "224.0.0.0/4", "240.0.0.0/4", "::/128", "::1/128", "64:ff9b::/96", "100::/64", "2001:db8::/32",
        "fc00::/7", "fe80::/10", "ff00::/8",
    )
)  # fmt: skip

Resolver = Callable[[str, int], list[str]]


class SSRFError(ValueError):
    """The URL points somewhere this server must not connect to."""


class FetchError(ValueError):
    """The URL was allowed but did not give what was asked for."""


def _system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


@dataclass(frozen=True)
class Guard:
    allow: tuple[IPNetwork, ...] = ()  # networks let through despite BLOCKED (e.g. a test receiver on loopback)
    resolver: Resolver = _system_resolver

    @classmethod
    def from_strings(cls, allow: Sequence[str], resolver: Resolver = _system_resolver) -> Guard:
        return cls(tuple(ipaddress.ip_network(a, strict=False) for a in allow), resolver)

    def allowed(self, address: IPAddress) -> bool:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allow):
            return True
        return not any(address in net for net in BLOCKED)

    def resolve(self, url: str) -> tuple[httpx.URL, str, str]:
        """(URL to connect to, with the checked IP; the original host; the checked IP) or SSRFError."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise SSRFError(f"url must be http or https, got {url!r}")
        host = parts.hostname
        if not host:
            raise SSRFError(f"url has no host: {url!r}")
        if parts.username or parts.password:
            raise SSRFError("url must not carry credentials")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            try:
                addresses = [ipaddress.ip_address(a.split("%")[0]) for a in self.resolver(host, port)]
            except OSError as err:
                raise SSRFError(f"cannot resolve {host!r}") from err
        if not addresses:
            raise SSRFError(f"cannot resolve {host!r}")
        refused = [str(a) for a in addresses if not self.allowed(a)]
        if refused:
            raise SSRFError(f"{host!r} resolves to a private or reserved address ({', '.join(refused)}); refused")
        ip = str(addresses[0])
        netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        return httpx.URL(pinned), host, ip

    def _pinned(self, url: str, headers: dict[str, str] | None) -> tuple[httpx.URL, dict[str, str], dict[str, Any]]:
        pinned, host, _ = self.resolve(url)
        parts = urlsplit(url)
        headers = dict(headers or {}) | {"Host": host if parts.port is None else f"{host}:{parts.port}"}
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        return pinned, headers, extensions

    def request(self, method: str, url: str, *, timeout_s: float = 5.0, **kwargs: Any) -> httpx.Response:
        """One request to `url` through the checked address; redirects are not followed."""
        pinned, headers, extensions = self._pinned(url, kwargs.pop("headers", None))
        with httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client:
            return client.request(method, pinned, headers=headers, extensions=extensions, **kwargs)

    def fetch(self, url: str, max_bytes: int, *, timeout_s: float = 10.0) -> bytes:
        """GET `url` through the checked address; at most `max_bytes` are read (TooLarge beyond that).
        Raises SSRFError, httpx.HTTPError, or FetchError for a non-200 answer."""
        pinned, headers, extensions = self._pinned(url, None)
        with (
            httpx.Client(timeout=timeout_s, follow_redirects=False, trust_env=False) as client,
            client.stream("GET", pinned, headers=headers, extensions=extensions) as response,
        ):
            if response.status_code != 200:
                raise FetchError(f"answered HTTP {response.status_code}")
            data = bytearray()
            for chunk in response.iter_bytes():
                data += chunk
                if len(data) > max_bytes:
                    raise FetchError(f"is larger than {max_bytes} bytes")
            return bytes(data)
