"""One authenticated vSphere session per `Connection`: certificate pinned, reused, re-logged in on expiry.

vCenter and ESXi expire idle sessions (30 min by default) and a backup of a large disk takes hours, so
every call goes through `call()`, which logs in again once on `NotAuthenticated`, and long transfers
call `keepalive()`.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import socket
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar
from urllib.parse import urlsplit

from pyVim.connect import Disconnect, SmartConnect
from pyVmomi import vim

T = TypeVar("T")


class VsphereError(Exception):
    """A vSphere problem worth one clear line to the operator."""


class ConnectionFailed(VsphereError):
    pass


class ThumbprintMismatch(ConnectionFailed):
    def __init__(self, address: str, expected: str, actual_sha1: str, actual_sha256: str) -> None:
        super().__init__(
            f"{address}: TLS certificate does not match the pinned thumbprint {expected}; "
            f"the server presents SHA-1 {actual_sha1} / SHA-256 {actual_sha256}"
        )
        self.expected = expected
        self.actual_sha1 = actual_sha1
        self.actual_sha256 = actual_sha256


@dataclass(frozen=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    path: str

    @classmethod
    def parse(cls, address: str) -> Endpoint:
        """`vc.example.com`, `10.0.0.5`, `https://vc:443/sdk` or `http://127.0.0.1:8989/sdk` (lab only)."""
        parts = urlsplit(address if "://" in address else f"https://{address}")
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ConnectionFailed(f"{address}: not a host name or an https URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path if parts.path not in ("", "/") else "/sdk")

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path}"


def normalise_thumbprint(value: str) -> str:
    return value.replace(":", "").replace(" ", "").lower()


def fingerprints(der_cert: bytes) -> tuple[str, str]:
    def colon(digest: bytes) -> str:
        return ":".join(f"{b:02X}" for b in digest)

    return colon(hashlib.sha1(der_cert).digest()), colon(hashlib.sha256(der_cert).digest())


def unverified_context() -> ssl.SSLContext:
    """A TLS context that accepts any certificate: every user of it must call `verify_pin` on the peer."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # ESXi/vCenter certificates rarely chain to a trusted CA: we pin
    return context


def peer_certificate(endpoint: Endpoint, timeout: float = 10.0) -> bytes | None:
    with (
        socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw,
        unverified_context().wrap_socket(raw, server_hostname=endpoint.host) as tls,
    ):
        return tls.getpeercert(binary_form=True)


def verify_pin(endpoint: Endpoint, thumbprint: str, der: bytes | None) -> None:
    """Fail closed unless `der`, the certificate the peer presented, has the pinned SHA-1 or SHA-256 thumbprint."""
    if der is None:
        raise ConnectionFailed(f"{endpoint}: the server presented no certificate")
    sha1, sha256 = fingerprints(der)
    if normalise_thumbprint(thumbprint) not in (normalise_thumbprint(sha1), normalise_thumbprint(sha256)):
        raise ThumbprintMismatch(str(endpoint), thumbprint, sha1, sha256)


def check_pin(endpoint: Endpoint, thumbprint: str) -> bytes:
    """Check the pin on a connection of its own; returns the pinned certificate (DER)."""
    try:
        der = peer_certificate(endpoint)
    except OSError as exc:
        raise ConnectionFailed(f"{endpoint}: {exc}") from None
    verify_pin(endpoint, thumbprint, der)
    assert der is not None
    return der


_NO_CHECK_TIME = 0x200000  # X509_V_FLAG_NO_CHECK_TIME; Python's ssl.VerifyFlags has no name for it


def pinned_context(der: bytes) -> ssl.SSLContext:
    """A TLS context that trusts exactly the pinned certificate, on every connection made with it.

    pyVmomi needs a context that verifies: its API version discovery (vimServiceVersions.xml) has no
    thumbprint fallback, so a self-signed ESXi/vCenter certificate fails there unless verification is
    off for everything, which would leave the SOAP connection that carries the password unpinned."""
    context = ssl.create_default_context(cadata=der)  # the only trust anchor: no system CA
    context.check_hostname = False  # the pin, not the name, identifies the server (addresses are often IPs)
    # a CA-signed leaf is trusted by itself, without its chain; and an expired self-signed ESXi
    # certificate stays as trusted as the day it was pinned (the pin is the operator's decision)
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN | _NO_CHECK_TIME
    return context


class PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS that checks the pin on every (re)connect, after the handshake and before a byte is sent.

    `http.client` reconnects silently when a keep-alive connection was closed, so checking once after the
    first connect would not be enough: the check lives in `connect()`, which every send goes through.
    """

    def __init__(self, endpoint: Endpoint, thumbprint: str, *, timeout: float = 300.0, blocksize: int = 8192) -> None:
        super().__init__(endpoint.host, endpoint.port, timeout=timeout, context=unverified_context(),
                         blocksize=blocksize)
        self.endpoint = endpoint
        self.thumbprint = thumbprint

    def connect(self) -> None:
        super().connect()  # TCP connect and TLS handshake (wrap_socket handshakes on connect)
        try:
            verify_pin(self.endpoint, self.thumbprint, self.sock.getpeercert(binary_form=True))
        except ConnectionFailed:
            self.close()
            raise


class VsphereSession:
    """A logged-in ServiceInstance; thread-safe re-login."""

    def __init__(
        self,
        address: str,
        user: str,
        password: str,
        *,
        thumbprint: str | None = None,
        insecure: bool = False,
        timeout: float = 60.0,
    ) -> None:
        if thumbprint is None and not insecure:
            raise ConnectionFailed(f"{address}: no thumbprint pinned and insecure is not set")
        self.endpoint = Endpoint.parse(address)
        self._user = user
        self._password = password
        self._thumbprint = thumbprint
        self._timeout = timeout
        self._lock = threading.Lock()
        self._si: vim.ServiceInstance | None = None

    # -- lifecycle -------------------------------------------------------------------------------

    def connect(self) -> vim.ServiceInstance:
        with self._lock:
            if self._si is None:
                self._si = self._login()
            return self._si

    def _login(self) -> vim.ServiceInstance:
        ep = self.endpoint
        context = None
        if ep.scheme == "https" and self._thumbprint:
            context = pinned_context(check_pin(ep, self._thumbprint))
        try:
            return SmartConnect(
                protocol=ep.scheme,
                host=ep.host,
                port=ep.port,
                path=ep.path,
                user=self._user,
                pwd=self._password,
                # Every connection pyVmomi opens verifies against the pinned certificate alone.
                sslContext=context,
                thumbprint=self._thumbprint,
                disableSslCertValidation=self._thumbprint is None,
                httpConnectionTimeout=self._timeout,
            )
        except vim.fault.InvalidLogin:
            raise ConnectionFailed(f"{ep}: login refused for user {self._user}") from None
        except (OSError, ssl.SSLError) as exc:
            raise ConnectionFailed(f"{ep}: {exc}") from None
        except vim.fault.VimFault as exc:
            raise ConnectionFailed(f"{ep}: {exc.msg or type(exc).__name__}") from None

    def close(self) -> None:
        with self._lock:
            si, self._si = self._si, None
        if si is not None:
            with contextlib.suppress(Exception):  # logging out of a dead session is not an error
                Disconnect(si)

    def __enter__(self) -> VsphereSession:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- calls -----------------------------------------------------------------------------------

    @property
    def thumbprint(self) -> str | None:
        """The pinned thumbprint; None only when the connection was explicitly made insecure."""
        return self._thumbprint

    @property
    def content(self) -> vim.ServiceInstanceContent:
        return self.call(lambda si: si.content)

    def call(self, fn: Callable[[vim.ServiceInstance], T]) -> T:
        """Run `fn(si)`; on an expired session log in once more and run it again."""
        si = self.connect()
        try:
            return fn(si)
        except vim.fault.NotAuthenticated:
            with self._lock:
                if self._si is si:  # another thread may have re-logged in already
                    self._si = self._login()
                si = self._si
            return fn(si)

    def keepalive(self) -> None:
        """A cheap call that keeps the session from idling out during long transfers."""
        self.call(lambda si: si.CurrentTime())

    @property
    def is_vcenter(self) -> bool:
        return self.content.about.apiType == "VirtualCenter"
