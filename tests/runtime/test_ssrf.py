"""The SSRF guard, form by form: every way of writing an inside address is refused with a reason, public ones pass."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from noor.api.app import ApiConfig, create_app
from noor.jobs import tenants
from noor.jobs.assets import AssetStore
from noor.jobs.store import Store
from noor.runtime.ssrf import Guard, SSRFError

# What names resolve to, for the cases that go through DNS.
ANSWERS = {
    "hooks.example.com": ["93.184.216.34"],
    "v6.example.com": ["2606:2800:220:1:248:1893:25c8:1946"],
    "sixtofour.example": ["2002:7f00:1::"],
    "mapped.example": ["::ffff:10.0.0.1"],
    "nat64.example": ["64:ff9b::a9fe:a9fe"],
    "123.example.com": ["93.184.216.34"],
    "mixed.example": ["93.184.216.34", "10.1.2.3"],  # one public and one private answer
}

REFUSED = [
    # (url, a fragment of the reason)
    ("http://[::7f00:1]/cb", "IPv4-compatible"),
    ("http://[::127.0.0.1]/cb", "IPv4-compatible"),
    ("http://[::a00:1]/cb", "IPv4-compatible"),
    ("http://[::ffff:0:7f00:1]/cb", "IPv4-translated"),
    ("http://[::ffff:0:808:808]/cb", "IPv4-translated"),  # refused whole, even around a public address
    ("http://[2002:7f00:1::]/cb", "6to4 of 127.0.0.1, loopback"),
    ("http://[2002:a9fe:a9fe::1]/cb", "6to4 of 169.254.169.254, link-local"),
    ("http://[2002:c0a8:101::]/cb", "6to4 of 192.168.1.1, private"),
    ("http://[64:ff9b::7f00:1]/cb", "NAT64 of 127.0.0.1, loopback"),
    ("http://[64:ff9b::10.1.2.3]/cb", "NAT64 of 10.1.2.3, private"),
    ("http://[64:ff9b:1::5db8:d822]/cb", "local-use NAT64"),
    ("http://[fec0::1]/cb", "site-local"),
    ("http://[fec0:0:0:ffff::1]/cb", "site-local"),
    ("http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/cb", "Teredo"),
    ("http://[2001::7f00:1]/cb", "Teredo"),
    ("http://[::ffff:127.0.0.1]/cb", "loopback"),
    ("http://[::ffff:a9fe:a9fe]/cb", "link-local"),
    ("http://[::ffff:10.0.0.1]:8080/cb", "private"),
    ("http://[::1]/cb", "loopback"),
    ("http://[::]/cb", "unspecified"),
    ("http://[fc00::1]/cb", "unique local"),
    ("http://[fd12:3456::1]/cb", "unique local"),
    ("http://[fe80::1]/cb", "link-local"),
    ("http://[fe80::1%25eth0]/cb", "zone id"),
    ("http://[ff02::1]/cb", "multicast"),
    ("http://[100::1]/cb", "discard-only"),
    ("http://[2001:db8::1]/cb", "documentation"),
    ("http://127.0.0.1/cb", "loopback"),
    ("http://0.0.0.0/cb", "'this network'"),
    ("http://10.0.0.1/cb", "private"),
    ("http://100.64.0.1/cb", "carrier-grade NAT"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://172.16.5.4/cb", "private"),
    ("http://192.168.1.1/cb", "private"),
    ("http://192.88.99.1/cb", "6to4 relay anycast"),
    ("http://198.18.0.1/cb", "benchmarking"),
    ("http://224.0.0.1/cb", "multicast"),
    ("http://255.255.255.255/cb", "reserved"),
    # numbers the C resolver reads as IPv4 addresses
    ("http://2130706433/cb", "not a dotted-quad"),
    ("http://0x7f.1/cb", "not a dotted-quad"),
    ("http://017700000001/cb", "not a dotted-quad"),
    ("http://0x7f000001/cb", "not a dotted-quad"),
    ("http://127.1/cb", "not a dotted-quad"),
    ("http://0177.0.0.1/cb", "not a dotted-quad"),
    ("http://127.0.0.01/cb", "not a dotted-quad"),
    ("http://3232235777/cb", "not a dotted-quad"),  # 192.168.1.1
    ("http://foo.0x7f/cb", "not a dotted-quad"),  # a numeric last label makes the whole host a number
    # trailing dots
    ("http://127.0.0.1./cb", "ends with a dot"),
    ("http://localhost./cb", "ends with a dot"),
    ("http://hooks.example.com./cb", "ends with a dot"),
    # names that resolve inside
    ("http://sixtofour.example/cb", "6to4 of 127.0.0.1"),
    ("http://mapped.example/cb", "private"),
    ("http://nat64.example/cb", "NAT64 of 169.254.169.254"),
    ("http://mixed.example/cb", "10.1.2.3 (private)"),
    # not URLs this server connects to at all
    ("ftp://93.184.216.34/cb", "must be http or https"),
    ("http://user:pw@93.184.216.34/cb", "must not carry credentials"),
    ("http:///cb", "has no host"),
    ("http://93.184.216.34:99999/cb", "not valid"),
    ("http://[::1/cb", "not valid"),
    ("http://unknown.example/cb", "cannot resolve"),
]

ALLOWED = [
    # (url, the address connected to)
    ("http://93.184.216.34/cb", "93.184.216.34"),
    ("https://1.1.1.1:8443/cb", "1.1.1.1"),
    ("http://hooks.example.com/cb", "93.184.216.34"),
    ("http://123.example.com/cb", "93.184.216.34"),  # numeric labels, but the last is a name
    ("https://v6.example.com/cb", "2606:2800:220:1:248:1893:25c8:1946"),
    ("http://[2606:4700:4700::1111]/cb", "2606:4700:4700::1111"),
    ("http://[::ffff:93.184.216.34]/cb", "93.184.216.34"),  # IPv4-mapped: connects to the IPv4 address itself
    ("http://[2002:5db8:d822::1]/cb", "2002:5db8:d822::1"),  # 6to4 of a public address
    ("http://[64:ff9b::5db8:d822]/cb", "64:ff9b::5db8:d822"),  # NAT64 of a public address (DNS64 networks)
]


def _resolver(host: str, port: int) -> list[str]:
    if host not in ANSWERS:
        raise OSError(f"no such name: {host}")
    return ANSWERS[host]


@pytest.mark.parametrize(("url", "reason"), REFUSED, ids=[u for u, _ in REFUSED])
def test_inside_addresses_are_refused_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(SSRFError) as refused:
        Guard(resolver=_resolver).resolve(url)
    assert reason in str(refused.value), str(refused.value)


@pytest.mark.parametrize(("url", "ip"), ALLOWED, ids=[u for u, _ in ALLOWED])
def test_public_addresses_pass_and_are_pinned(url: str, ip: str) -> None:
    pinned, _, connected = Guard(resolver=_resolver).resolve(url)
    assert connected == ip
    assert pinned.host == ip


def test_the_checked_address_is_the_one_connected_to() -> None:
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:  # public on the first look, loopback afterwards
        calls.append(host)
        return ["93.184.216.34"] if len(calls) == 1 else ["127.0.0.1"]

    pinned, host, ip = Guard(resolver=rebinding).resolve("https://hooks.example.com:8443/cb?x=1")
    assert (str(pinned), host, ip) == ("https://93.184.216.34:8443/cb?x=1", "hooks.example.com", "93.184.216.34")
    assert len(calls) == 1  # resolved once; the connection goes to that answer


def test_the_allow_list_lets_a_network_through_but_not_its_embedded_forms() -> None:
    guard = Guard.from_strings(["127.0.0.1/32"], resolver=_resolver)
    assert guard.resolve("http://127.0.0.1:8080/cb")[2] == "127.0.0.1"
    assert guard.resolve("http://[::ffff:127.0.0.1]:8080/cb")[2] == "127.0.0.1"  # the same socket address
    for url in ("http://[2002:7f00:1::]/cb", "http://[64:ff9b::7f00:1]/cb", "http://[::7f00:1]/cb"):
        with pytest.raises(SSRFError):  # these would go out through a relay or translator, not to loopback
            guard.resolve(url)


@pytest.mark.parametrize(
    "url", ["http://[::7f00:1]/cb", "http://[2002:7f00:1::]/cb", "http://0x7f.1/cb", "http://localhost./cb"]
)
def test_the_api_answers_400_naming_callback_url(tmp_path: Path, url: str) -> None:
    store = Store(f"sqlite:///{tmp_path / 'noor.db'}")
    tenants.create_tenant(store, "acme", credits_cents=100)
    client = TestClient(create_app(store, AssetStore(str(tmp_path / "assets")), ApiConfig(secret=b"s")))
    auth = {"Authorization": f"Bearer {tenants.create_key(store, 'acme')}"}
    r = client.post("/generations/image", json={"prompt": "a red square", "callback_url": url}, headers=auth)
    assert r.status_code == 400, r.text
    assert r.json()["detail"].startswith("callback_url: "), r.text
    assert store.list("acme", 10, 0)[1] == 0  # nothing stored
    store.close()
