"""The address rule of HTTP push targets: which addresses the server calls by default,
what --http-allow-cidr adds, and the literal forms an URL can spell an address in."""

from __future__ import annotations

import ipaddress

import pytest

from dispatchd.config import ConfigError, load
from dispatchd.engine.addresses import AddressPolicy, address_kind, literal_address
from dispatchd.engine.errors import FailedPrecondition


@pytest.mark.parametrize(
    ("address", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("::ffff:10.0.0.1", "private"),
        ("2002:7f00:1::", "loopback"),  # 6to4 around 127.0.0.1
        ("64:ff9b::a9fe:a9fe", "link-local"),  # NAT64 around 169.254.169.254
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("10.0.0.1", "private"),
        ("172.31.255.255", "private"),
        ("192.168.1.1", "private"),
        ("fd00:ec2::254", "private"),
        ("fc00::1", "private"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("100.64.0.1", "shared"),
        ("100.100.100.200", "shared"),  # a metadata service on one cloud
        ("192.0.0.192", "special-purpose"),  # and on another
        ("224.0.0.251", "multicast"),
        ("ff02::1", "multicast"),
        ("240.0.0.1", "reserved"),
        ("255.255.255.255", "reserved"),
        ("198.18.0.1", "private"),
    ],
)
def test_internal_addresses_are_refused_by_kind(address: str, kind: str) -> None:
    found = address_kind(ipaddress.ip_address(address))
    assert found is not None
    assert found.startswith(kind)


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8"])
def test_public_addresses_are_called(address: str) -> None:
    assert address_kind(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("[::1]", "::1"),
        ("example.com", None),
        ("cafe", None),  # hex letters, but a name
        ("localhost", None),
    ],
)
def test_literal_forms_are_read_without_dns(host: str, address: str | None) -> None:
    ip = literal_address(host)
    assert (str(ip) if ip is not None else None) == address


def test_the_allow_list_admits_only_its_networks() -> None:
    policy = AddressPolicy.of(["10.0.0.0/8", "127.0.0.1/32", "fd00::/8"])
    assert policy.refusal(ipaddress.ip_address("10.9.8.7")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.1")) is None
    assert policy.refusal(ipaddress.ip_address("::ffff:127.0.0.1")) is None  # the same address
    assert policy.refusal(ipaddress.ip_address("fd00:ec2::254")) is None
    assert policy.refusal(ipaddress.ip_address("127.0.0.2")) == "loopback"
    assert policy.refusal(ipaddress.ip_address("192.168.0.1")) == "private"
    assert AddressPolicy.of(["0.0.0.0/0", "::/0"]).refusal(ipaddress.ip_address("::1")) is None
    with pytest.raises(ValueError, match="--http-allow-cidr: 'nope'"):
        AddressPolicy.of(["nope"])


def test_urls_with_a_forbidden_literal_are_refused_names_pass() -> None:
    policy = AddressPolicy()
    with pytest.raises(FailedPrecondition, match=r"2130706433 \(127\.0\.0\.1\) is a loopback"):
        policy.check_url("http://2130706433:8080/x")
    with pytest.raises(FailedPrecondition, match="--http-allow-cidr"):
        policy.check_url("https://[::ffff:169.254.169.254]/latest")
    policy.check_url("https://example.com/hook")  # a name: checked when it connects
    policy.check_url("https://93.184.216.34/hook")


def test_the_allow_flag_is_read_and_checked() -> None:
    assert load([], env={}).http_allow_cidr == ()
    c = load([], env={"DISPATCHD_HTTP_ALLOW_CIDR": "10.0.0.0/8, fd00::/8"})
    assert c.http_allow_cidr == ("10.0.0.0/8", "fd00::/8")
    assert load(["--http-allow-cidr", "127.0.0.1/32"], env={}).http_allow_cidr == ("127.0.0.1/32",)
    with pytest.raises(ConfigError, match=r"--http-allow-cidr: '10\.0\.0\.0/33'"):
        load(["--http-allow-cidr", "10.0.0.0/33"], env={})
