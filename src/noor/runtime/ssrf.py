"""Outbound HTTP that cannot be pointed at the inside, nor held open by a slow peer.

The host is resolved once, every address it resolves to is checked, and the connection goes to the
checked address (the name is kept for the Host header and TLS), so a DNS answer that changes between
the check and the connection (rebinding) cannot slip through. IPv6 forms that carry an IPv4 address
(IPv4-mapped, 6to4, NAT64) are judged by that IPv4 address; the deprecated or tunnelling ones
(IPv4-compatible, IPv4-translated, Teredo, site-local, local-use NAT64) are refused whole. A host whose
last label is a number must be a dotted quad: 2130706433, 0x7f.1 and 017700000001 all mean 127.0.0.1 to
the C resolver, and a check that reads them differently from the resolver is a bypass.

A request is whole within a wall-clock deadline (name lookup, connect, headers and body together: a peer
that trickles a byte just inside every read timeout still ends at the deadline), its body is bounded,
and keyframe fetches hold at most `Slots` of the caller's threads, per tenant and in total.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import certifi
import httpx

from noor.runtime.slots import Busy, Slots

__all__ = ["BLOCKED", "Answer", "Busy", "FetchError", "Guard", "SSRFError"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Networks never connected to, with what they are (IANA special-purpose registries, RFC 6890 and successors).
# More specific first: the first match names the refusal. Not here, because they are judged by the IPv4
# address they carry: ::ffff:0:0/96 (IPv4-mapped), 64:ff9b::/96 (NAT64, RFC 6052), 2002::/16 (6to4, RFC 3056).
BLOCKED: dict[IPNetwork, str] = {
    ipaddress.ip_network(net): name
    for net, name in (
        ("0.0.0.0/8", "'this network'"), ("10.0.0.0/8", "private"), ("100.64.0.0/10", "shared (carrier-grade NAT)"),
        ("127.0.0.0/8", "loopback"), ("169.254.0.0/16", "link-local (cloud metadata)"), ("172.16.0.0/12", "private"),
        ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
        ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"), ("198.18.0.0/15", "benchmarking"),
        ("198.51.100.0/24", "documentation"), ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"),
        ("240.0.0.0/4", "reserved"),
        ("::/128", "unspecified"), ("::1/128", "loopback"), ("::/96", "IPv4-compatible (deprecated, RFC 4291)"),
        ("::ffff:0:0:0/96", "IPv4-translated (SIIT, RFC 2765)"), ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215)"),
        ("100::/64", "discard-only"), ("2001::/32", "Teredo (RFC 4380)"), ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"), ("5f00::/16", "SRv6 SIDs"),
        ("fc00::/7", "unique local (private)"), ("fe80::/10", "link-local"), ("fec0::/10", "site-local (deprecated)"),
        ("ff00::/8", "multicast"),
    )
}  # fmt: skip
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# A label that the C resolver (inet_aton) reads as a number: decimal, octal (leading 0) or hex (0x).
NUMERIC_LABEL = re.compile(r"^(0x[0-9a-f]*|[0-9]+)$", re.IGNORECASE)
FETCH_DEADLINE_S = 10.0
LOOKUP_DEADLINE_S = 5.0  # glibc's default resolver timeout for one name server
FETCH_SLOTS_TOTAL = 8  # well under the API's 40 request threads (AnyIO's default), so fetches cannot take them all
FETCH_SLOTS_PER_TENANT = 2

Resolver = Callable[[str, int], list[str]]


class SSRFError(ValueError):
    """The URL points somewhere this server must not connect to."""


class FetchError(ValueError):
    """The URL was allowed but did not give what was asked for (in time, in size, with status 200)."""


def _system_resolver(host: str, port: int) -> list[str]:
    return sorted({str(info[4][0]) for info in socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)})


# Name lookups run here, not on the caller's thread, so a deadline covers them: a lookup that hangs past it
# holds one of these threads until the system resolver gives up, never the caller.
_LOOKUPS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="noor-ssrf-lookup")


@functools.cache
def _tls() -> ssl.SSLContext:
    """One verifying TLS context for every request (httpx's default, built once: loading the CA bundle costs ms)."""
    return ssl.create_default_context(cafile=certifi.where())


def _blocked(address: IPAddress) -> str | None:
    """What `address` is, if it is in BLOCKED, or is not globally routable by the standard library's tables."""
    for net, name in BLOCKED.items():
        if address.version == net.version and address in net:
            return name
    return None if address.is_global else "not globally routable"


def _embedded(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries and reaches, with the form's name."""
    if address in NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    return None


def _check_host(host: str, url: str) -> None:
    if host.endswith("."):
        raise SSRFError(f"url host {host!r} ends with a dot; write it without: {url!r}")
    if ":" not in host and NUMERIC_LABEL.match(host.rsplit(".", 1)[-1]):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise SSRFError(
                f"url host {host!r} is a number but not a dotted-quad IPv4 address (decimal, octal and hex forms "
                f"are refused): {url!r}"
            ) from None


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _split(url: str) -> tuple[SplitResult, str, int]:
    """(parts, host, port) of an http(s) URL with a host and no credentials, or SSRFError."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as err:  # a bad port or IPv6 literal
        raise SSRFError(f"url is not valid ({err}): {url!r}") from None
    if parts.scheme not in ("http", "https"):
        raise SSRFError(f"url must be http or https, got {url!r}")
    host = parts.hostname
    if not host:
        raise SSRFError(f"url has no host: {url!r}")
    if parts.username is not None or parts.password is not None:
        raise SSRFError(f"url must not carry credentials: {parts.scheme}://…@{host}")
    _check_host(host, url)
    return parts, host, port or (443 if parts.scheme == "https" else 80)


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes


@dataclass(frozen=True)
class Guard:
    allow: tuple[IPNetwork, ...] = ()  # networks let through despite BLOCKED (e.g. a test receiver on loopback)
    resolver: Resolver = _system_resolver
    fetch_deadline_s: float = FETCH_DEADLINE_S
    lookup_deadline_s: float = LOOKUP_DEADLINE_S  # `resolve` on the caller's thread (a callback_url check)
    fetch_slots: Slots = field(
        default_factory=lambda: Slots(FETCH_SLOTS_TOTAL, {"tenant": FETCH_SLOTS_PER_TENANT}), compare=False
    )

    @classmethod
    def from_strings(cls, allow: Sequence[str], resolver: Resolver = _system_resolver, **kwargs: Any) -> Guard:
        return cls(tuple(ipaddress.ip_network(a, strict=False) for a in allow), resolver, **kwargs)

    def refusal(self, address: IPAddress) -> str | None:
        """Why this server must not connect to `address`, or None if it may."""
        if isinstance(address, ipaddress.IPv6Address):
            if address.scope_id:
                return "an address with a zone id"
            address = address.ipv4_mapped or address  # the socket connects to the IPv4 address itself
        if any(address.version == net.version and address in net for net in self.allow):
            return None
        why = _blocked(address)
        if why is None and isinstance(address, ipaddress.IPv6Address) and (carried := _embedded(address)):
            inner = _blocked(carried[1])
            why = None if inner is None else f"{carried[0]} of {carried[1]}, {inner}"
        return why

    def allowed(self, address: IPAddress) -> bool:
        return self.refusal(address) is None

    def resolve(self, url: str) -> tuple[httpx.URL, str, str]:
        """(URL to connect to, with the checked IP; the original host; the checked IP) or SSRFError.

        Blocks the calling thread for the name lookup, at most `lookup_deadline_s` (the lookup runs on a
        lookup thread, so a name server that never answers holds that thread, not this one)."""
        parts, host, port = _split(url)
        lookup = None if _literal(host) else _LOOKUPS.submit(self.resolver, host, port)
        try:
            answers = lookup.result(timeout=self.lookup_deadline_s) if lookup else None
        except TimeoutError:
            raise SSRFError(f"cannot resolve {host!r}: no answer within {self.lookup_deadline_s:g} s") from None
        except (OSError, UnicodeError) as err:
            raise SSRFError(f"cannot resolve {host!r}: {err}") from err
        return self._pin(parts, host, port, answers)

    async def _resolve_async(self, url: str) -> tuple[httpx.URL, str, str]:
        """`resolve` for async callers: the lookup is awaited, so the caller's deadline bounds it."""
        parts, host, port = _split(url)
        lookup = None if _literal(host) else _LOOKUPS.submit(self.resolver, host, port)
        answers: list[str] | None = None
        try:
            if lookup is not None:
                answers = await asyncio.wrap_future(lookup)
        except (OSError, UnicodeError) as err:
            raise SSRFError(f"cannot resolve {host!r}: {err}") from err
        return self._pin(parts, host, port, answers)

    def _pin(self, parts: SplitResult, host: str, port: int, answers: list[str] | None) -> tuple[httpx.URL, str, str]:
        """Check the host's addresses (its literal, or the lookup's `answers`) and pin the URL to the first."""
        if answers is None:
            addresses: list[IPAddress] = [ipaddress.ip_address(host)]
        else:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in answers]
        if not addresses:
            raise SSRFError(f"cannot resolve {host!r}")
        refused = [f"{a} ({why})" for a in addresses if (why := self.refusal(a)) is not None]
        if refused:
            raise SSRFError(f"{host!r} is or resolves to a private or reserved address: {', '.join(refused)}; refused")
        first = addresses[0]
        ip = str(first.ipv4_mapped or first) if isinstance(first, ipaddress.IPv6Address) else str(first)
        netloc = f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
        return httpx.URL(pinned), host, ip

    async def send(
        self,
        method: str,
        url: str,
        *,
        deadline_s: float,
        max_bytes: int = 0,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Answer:
        """One request to `url` through the checked address, redirects not followed, whole within `deadline_s`.

        The body of a 2xx answer is read up to `max_bytes` (0: not read). Raises SSRFError, FetchError (the
        deadline passed, the body is too large) or httpx.HTTPError (connection refused, bad TLS, …)."""
        try:
            async with asyncio.timeout(deadline_s):
                # 1. resolve (on a lookup thread) and check
                pinned, host, _ = await self._resolve_async(url)
                parts = urlsplit(url)
                # identity: a compressed body is bounded by its raw size but could inflate far past it in memory
                headers = {"Accept-Encoding": "identity"} | (headers or {})
                headers["Host"] = host if parts.port is None else f"{host}:{parts.port}"
                extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
                # 2. connect, send, read the status line and headers (httpx's per-step timeouts are the
                #    deadline too, so they never fire first)
                async with (
                    httpx.AsyncClient(timeout=deadline_s, follow_redirects=False, trust_env=False, verify=_tls()) as c,
                    c.stream(method, pinned, headers=headers, content=content, extensions=extensions) as response,
                ):
                    if max_bytes <= 0 or not 200 <= response.status_code < 300:
                        return Answer(response.status_code, b"")
                    # 3. the body, bounded: refused early by its declared length, else as it streams in
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise FetchError(f"is larger than {max_bytes} bytes (Content-Length {declared})")
                    body = bytearray()
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise FetchError(f"is larger than {max_bytes} bytes")
                    return Answer(response.status_code, bytes(body))
        except TimeoutError:
            raise FetchError(f"did not answer in full within its {deadline_s:g} s deadline") from None

    async def fetch_async(self, url: str, max_bytes: int, *, tenant: str | None = None) -> bytes:
        """GET `url`, whole within `fetch_deadline_s` and at most `max_bytes` long, holding one of `fetch_slots`
        (per tenant and in total) meanwhile; Busy at once when there is none free. Otherwise raises
        SSRFError, httpx.HTTPError, or FetchError (deadline, size, or an answer other than 200)."""
        with self.fetch_slots.hold({"tenant": tenant} if tenant else {}):
            answer = await self.send("GET", url, deadline_s=self.fetch_deadline_s, max_bytes=max_bytes)
        if answer.status != 200:
            raise FetchError(f"answered HTTP {answer.status}")
        return answer.body

    def fetch(self, url: str, max_bytes: int, *, tenant: str | None = None) -> bytes:
        """`fetch_async` on the calling thread (which must not be running an event loop: async code awaits
        `fetch_async`). The slots bound how many of the caller's threads slow peers can hold at once."""
        return asyncio.run(self.fetch_async(url, max_bytes, tenant=tenant))
