"""The egress guard: where a connection may send a stored key.

Every outbound call (connection tests, model discovery, OAuth token fetches, workspace calls)
checks its URL here. Only http and https; the host is resolved and EVERY address checked; cloud
metadata endpoints are always refused; loopback, private (RFC 1918, ULA), link-local, CGNAT
(RFC 6598), multicast, reserved and unspecified addresses are refused unless
settings.LLMCONN_EGRESS_ALLOW names them (a host name or a CIDR). Refusals raise EgressBlocked,
whose message names the setting to change.

`check_url` alone leaves a window between the check and the connect in which DNS could answer
differently (rebinding). providers.transport closes it: its resolver calls `check_host` and
aiohttp connects only to the addresses it returned (TLS still verifies the host name).
Host names are IDNA-encoded here exactly as the transport encodes them (yarl: UTS 46 / IDNA
2008), so the name checked is the name connected to.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from django.conf import settings

SETTING = "LLMCONN_EGRESS_ALLOW"

# Instance-metadata services hand out cloud credentials: never reachable, whatever is allowed.
METADATA_ADDRESSES = frozenset(
    ipaddress.ip_address(a)
    for a in (
        "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean...
        "169.254.170.2",  # AWS ECS task metadata
        "169.254.169.123",  # AWS time sync
        "100.100.100.200",  # Alibaba Cloud
        "192.0.0.192",  # Oracle Cloud
        "fd00:ec2::254",  # AWS IMDS over IPv6
        "fd00:ec2::23",
    )
)
METADATA_HOSTS = frozenset(
    {"metadata.google.internal", "metadata.goog", "metadata", "instance-data",
     "instance-data.ec2.internal", "metadata.azure.internal", "kubernetes.default.svc"}
)
CGNAT = ipaddress.ip_network("100.64.0.0/10")


class EgressBlocked(Exception):
    """A URL or address the egress policy refuses. The message is safe to show and store."""

    error_class = "blocked"


@dataclass(frozen=True)
class Policy:
    """Parsed LLMCONN_EGRESS_ALLOW: host names and networks that may be reached though private."""

    hosts: frozenset[str]
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]

    def allows_host(self, host: str) -> bool:
        return host in self.hosts

    def allows_address(self, address) -> bool:
        return any(address.version == n.version and address in n for n in self.networks)


@lru_cache(maxsize=8)
def _parse(entries: tuple[str, ...]) -> Policy:
    hosts, networks = set(), []
    for raw in entries:
        entry = raw.strip().lower().strip("[]")
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.rstrip("."))
    return Policy(frozenset(hosts), tuple(networks))


def policy() -> Policy:
    """The policy for the current settings (cached per distinct value)."""
    return _parse(tuple(getattr(settings, SETTING, ()) or ()))


def _normalise(address):
    """IPv4-mapped and 6to4/NAT64-embedded IPv6 addresses are judged as their IPv4 address."""
    if address.version == 6:
        if address.ipv4_mapped:
            return address.ipv4_mapped
        if address.sixtofour:
            return address.sixtofour
        if address in ipaddress.ip_network("64:ff9b::/96"):
            return ipaddress.ip_address(int(address) & 0xFFFFFFFF)
    return address


def _is_internal(address) -> bool:
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or (address.version == 4 and address in CGNAT)
        or (address.version == 6 and address.is_site_local)
    )


def check_address(address: str, *, host: str = "") -> None:
    """Raise EgressBlocked unless the policy lets a call reach this IP address."""
    original = ipaddress.ip_address(address.split("%", 1)[0])
    ip = _normalise(original)
    if ip in METADATA_ADDRESSES or original in METADATA_ADDRESSES:
        raise EgressBlocked(
            f"Refused: {host or ip} is a cloud metadata address ({ip}); llmconn never sends "
            "requests there."
        )
    pol = policy()
    if _is_internal(ip) and not (pol.allows_address(ip) or (host and pol.allows_host(host))):
        raise EgressBlocked(
            f"Refused: {host or ip} resolves to the internal address {ip}. To allow it, add the "
            f"host or a network containing it to {SETTING} (e.g. {SETTING}={ip}/{ip.max_prefixlen})."
        )


def _split(url: str) -> tuple[str, int]:
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise EgressBlocked(f"Refused: {url[:100]!r} is not a valid URL.") from exc
    if parts.scheme not in ("http", "https"):
        raise EgressBlocked(
            f"Refused: only http and https URLs may be called (got {parts.scheme or 'none'!r})."
        )
    if parts.username is not None or parts.password is not None:
        raise EgressBlocked("Refused: URLs with a user name or password are not allowed.")
    host = (parts.hostname or "").rstrip(".").lower()
    if not host:
        raise EgressBlocked("Refused: the URL names no host.")
    return idna_host(host), port or (443 if parts.scheme == "https" else 80)


def idna_host(host: str) -> str:
    """The ASCII form of a host name as aiohttp (yarl) sends and connects to it."""
    if host.isascii():
        return host
    from yarl import URL

    try:
        return (URL.build(scheme="http", host=host).raw_host or "").lower()
    except (ValueError, UnicodeError) as exc:
        raise EgressBlocked(f"Refused: {host[:100]!r} is not a valid host name.") from exc


def resolve(host: str, port: int) -> list[str]:
    """Every address a host resolves to (numeric hosts, in any form inet_aton takes, too)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise LookupError(f"cannot resolve {host}") from exc
    seen: list[str] = []
    for info in infos:
        address = info[4][0]
        if address not in seen:
            seen.append(address)
    return seen


def check_host(host: str, port: int) -> list[str]:
    """Resolve a host, check every address, and return them (all allowed) in resolver order."""
    host = idna_host(host.rstrip(".").lower().strip("[]"))
    if host in METADATA_HOSTS or host.endswith(".metadata.google.internal"):
        raise EgressBlocked(f"Refused: {host} is a cloud metadata host.")
    addresses = resolve(host, port)
    if not addresses:
        raise LookupError(f"cannot resolve {host}")
    for address in addresses:
        check_address(address, host=host)
    return addresses


def check_url(url: str) -> list[str]:
    """Check a URL against the policy; return its (allowed) addresses.

    Raises EgressBlocked when refused, LookupError when the host does not resolve.
    """
    host, port = _split(url)
    return check_host(host, port)
