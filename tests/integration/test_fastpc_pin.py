"""The wire-level PropertyCollector client pins the certificate on its own connection, before the cookie.

`fastpc` does not reuse the connection login pinned: it opens one of its own, so a server swapped in
after login (DNS change, a man in the middle) would get the session cookie unless that connection is
pinned too. The lab vCenter is reached through a TCP front in this test that first passes bytes through
to vcsim (login sees vcsim's certificate and the pin matches) and then turns impostor: it terminates TLS
with another certificate and records every byte it receives.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from reconciler.adapters.vsphere.collect import collect_inventory
from reconciler.adapters.vsphere.session import ThumbprintMismatch, VsphereSession, fingerprints

pytestmark = pytest.mark.lab


def _self_signed(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "impostor.pem", directory / "impostor.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def _pipe(src: socket.socket, dst: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while data := src.recv(65536):
            dst.sendall(data)
    with contextlib.suppress(OSError):
        dst.shutdown(socket.SHUT_WR)


class SwitchableFront:
    """A TCP listener that forwards to `upstream`, or, once `impersonate()` is called, answers TLS itself
    with another certificate and keeps what each impostor connection received after the handshake."""

    def __init__(self, upstream: tuple[str, int], cert: Path, key: Path) -> None:
        self.upstream = upstream
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.impostor_der = ssl.PEM_cert_to_DER_cert(cert.read_text())
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.impersonating = False
        self.received: list[bytes] = []  # one entry per impostor connection, complete when its client left
        self.handshakes = 0
        self._threads: list[threading.Thread] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = self.listener.accept()
                self._start(self._impostor if self.impersonating else self._forward, client)

    def _forward(self, client: socket.socket) -> None:
        with client, socket.create_connection(self.upstream) as server:
            back = threading.Thread(target=_pipe, args=(server, client), daemon=True)
            back.start()
            _pipe(client, server)
            back.join()

    def _impostor(self, client: socket.socket) -> None:
        data = b""
        try:
            with self.context.wrap_socket(client, server_side=True) as tls:
                self.handshakes += 1
                tls.settimeout(10)
                while chunk := tls.recv(65536):
                    data += chunk
        except (OSError, ssl.SSLError):
            pass  # the client hanging up without a TLS close_notify is the expected end
        self.received.append(data)

    def impersonate(self) -> None:
        self.impersonating = True

    def join(self, timeout: float = 10.0) -> None:
        for thread in self._threads[1:]:
            thread.join(timeout)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def front(vcenter, tmp_path: Path) -> Iterator[SwitchableFront]:
    e = vcenter.endpoints
    cert, key = _self_signed(tmp_path)
    f = SwitchableFront((e.host, e.port), cert, key)
    try:
        yield f
    finally:
        f.close()


def _session_through(front: SwitchableFront, vcenter, thumbprint: str) -> VsphereSession:
    e = vcenter.endpoints
    return VsphereSession(f"https://127.0.0.1:{front.port}/sdk", e.username, e.password, thumbprint=thumbprint)


def test_inventory_is_retrieved_through_the_pinned_wire_with_either_pin(vcenter, front):
    e = vcenter.endpoints
    for pin in (e.thumbprint_sha256, e.thumbprint_sha1):
        with _session_through(front, vcenter, pin) as session:
            assert collect_inventory(session).objects


def test_server_swapped_after_login_gets_no_cookie_and_no_byte(vcenter, front):
    e = vcenter.endpoints
    with _session_through(front, vcenter, e.thumbprint_sha256) as session:
        session.connect()  # login through the front while it still passes through to vcsim: the pin matches
        front.impersonate()
        with pytest.raises(ThumbprintMismatch) as err:
            collect_inventory(session)
    front.join()
    assert front.handshakes >= 1, "fastpc must have reached the impostor (its own connection)"
    assert front.received and all(data == b"" for data in front.received), front.received
    assert (err.value.actual_sha1, err.value.actual_sha256) == fingerprints(front.impostor_der)
    assert err.value.expected == e.thumbprint_sha256
