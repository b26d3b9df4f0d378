"""An image named by URL (remove.bg's `image_url`, rembg's `?url=`), fetched only where the operator allows.

A server that fetches what a caller names can be made to reach what only it can reach (the metadata
service, Redis, an admin page on the loopback). So: off unless CVUNET_IMAGE_URL_HOSTS names hosts;
http(s) to one of those names only; every address the name resolves to must be a public one, and the
connection goes to the address that was checked (a second lookup could answer otherwise: DNS
rebinding); no redirects (they would lead anywhere); at most the upload limit, within a total time.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from cvunet_matting.config import Settings
from cvunet_matting.errors import ErrorCode, InputError

CHUNK = 256 * 1024


@dataclass(frozen=True)
class UrlPolicy:
    hosts: tuple[str, ...]
    timeout_s: float
    max_bytes: int

    @classmethod
    def of(cls, settings: Settings) -> UrlPolicy:
        return cls(settings.image_url_hosts, settings.image_url_timeout_s, settings.max_upload_mb * 1024 * 1024)


def refused(message: str) -> InputError:
    return InputError(message, code=ErrorCode.BAD_URL)


def failed(message: str) -> InputError:
    return InputError(message, code=ErrorCode.URL_FAILED)


def is_public(address: str) -> bool:
    """An address on the internet at large: not private, loopback, link-local, reserved or multicast."""
    ip = ipaddress.ip_address(address)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def checked_address(host: str, port: int, public: Callable[[str], bool]) -> str:
    """The address to connect to: the first of the name's, once every one of them has been found public."""
    try:
        found = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise failed(f"the image URL's host {host!r} could not be resolved") from None
    addresses = [str(info[4][0]) for info in found]
    if not addresses or not all(public(address) for address in addresses):
        raise refused(f"the image URL's host {host!r} resolves to a private or local address: refused")
    return addresses[0]


class PinnedConnection(http.client.HTTPConnection):
    """HTTP(S) to the address already checked, with the host's own name for TLS and the Host header."""

    def __init__(self, host: str, port: int, address: str, tls: bool, timeout: float):
        super().__init__(host, port, timeout=timeout)
        self.address, self.tls = address, tls

    def connect(self) -> None:
        sock = socket.create_connection((self.address, self.port), self.timeout)
        self.sock = ssl.create_default_context().wrap_socket(sock, server_hostname=self.host) if self.tls else sock


def fetch_image(url: str, policy: UrlPolicy, public: Callable[[str], bool] | None = None) -> bytes:
    """The bytes at `url`, or InputError: `bad_url` when the policy refuses it, `url_failed` when it fails."""
    if not policy.hosts:
        raise refused("fetching images by URL is off on this server: upload the image instead")
    parts = urlsplit(url.strip()) if isinstance(url, str) and len(url) <= 2048 else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.hostname or parts.username:
        raise refused("the image URL must be an http or https URL, without user or password")
    host = parts.hostname.lower()
    if host not in policy.hosts:
        raise refused(f"this server fetches images only from {', '.join(policy.hosts)}, not {host!r}")
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise refused("the image URL's port is not a number from 0 to 65535") from None
    address = checked_address(host, port, public or is_public)
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    deadline = time.monotonic() + policy.timeout_s
    connection = PinnedConnection(host, port, address, parts.scheme == "https", policy.timeout_s)
    try:
        connection.request("GET", path, headers={"Accept": "image/*", "User-Agent": "cvunet-matting"})
        return read_body(connection, connection.getresponse(), policy, deadline)
    except TimeoutError:  # a read given what was left of the deadline, or the connection, ran out of it
        raise failed(f"the image took more than {policy.timeout_s:g} s to download") from None
    except (OSError, http.client.HTTPException) as exc:
        raise failed(f"the image could not be downloaded from {host}: {exc.__class__.__name__}") from None
    finally:
        connection.close()


def read_body(connection: PinnedConnection, response, policy: UrlPolicy, deadline: float) -> bytes:
    """The response's body, at most policy.max_bytes, by the deadline (each read may take what is left)."""
    if response.status != 200:
        raise failed(f"the image URL answered HTTP {response.status} (redirects are not followed)")
    length = response.getheader("Content-Length")
    if length and length.isdigit() and int(length) > policy.max_bytes:
        raise failed(f"the image at that URL is larger than the {policy.max_bytes // 2**20} MB limit")
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise failed(f"the image took more than {policy.timeout_s:g} s to download")
        if connection.sock is not None:
            connection.sock.settimeout(left)
        chunk = response.read1(CHUNK)
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > policy.max_bytes:
            raise failed(f"the image at that URL is larger than the {policy.max_bytes // 2**20} MB limit")
        chunks.append(chunk)
