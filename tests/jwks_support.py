"""Test side of keys by URL: a name table in place of DNS, and an in-process JWKS server.

The resolver stands in for DNS only; the guard in ``agentauth.jwks`` checks whatever it returns.
Public literal addresses never resolve here, so nothing in the suite can reach another machine.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

#: name -> addresses, or a callable returning them (rebinding tests).
NAMES: dict[str, list[str] | Callable[[], list[str]]] = {}
CALLS: list[str] = []


def resolve(host: str, port: int) -> list[str]:
    CALLS.append(host)
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        if literal.is_global:
            raise socket.gaierror(socket.EAI_NONAME, "public literals never resolve in tests")
        return [host]
    entry = NAMES.get(host)
    if entry is None:
        raise socket.gaierror(socket.EAI_NONAME, f"{host} is not in the test name table")
    return list(entry() if callable(entry) else entry)


# --- certificates ---------------------------------------------------------------------------


@dataclass
class Pki:
    ca_file: Path
    cert_file: Path
    key_file: Path


def make_pki(directory: Path, names: list[str]) -> Pki:
    """A throw-away CA and a server certificate for ``names`` (DNS names and 127.0.0.1)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentauth test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pki = Pki(directory / "ca.pem", directory / "server.pem", directory / "server-key.pem")
    pki.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    pki.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pki.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return pki


# --- the server -----------------------------------------------------------------------------


@dataclass
class Route:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    #: Seconds to wait before answering, or between body bytes when ``drip``.
    delay: float = 0.0
    drip: bool = False
    #: Send no Content-Length and close after the body (a body of unknown length).
    unsized: bool = False
    #: Trickle an endless header line, one byte per ``delay``.
    drip_headers: bool = False


@dataclass
class Hit:
    path: str
    host_header: str


class JwksServer:
    """HTTP(S) on 127.0.0.1 in a thread; tests set ``routes`` and read ``hits``."""

    def __init__(self, tls: ssl.SSLContext | None) -> None:
        self.routes: dict[str, Route] = {}
        self.hits: list[Hit] = []
        self._stop = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server.hits.append(Hit(self.path, self.headers.get("Host", "")))
                route = server.routes.get(self.path, Route(status=404))
                if route.drip_headers:
                    try:
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
                        while not server._stop.wait(route.delay):
                            self.wfile.write(b"a")
                            self.wfile.flush()
                    except OSError:
                        pass
                    return
                if route.delay and not route.drip:
                    server._stop.wait(route.delay)
                self.send_response(route.status)
                for name, value in route.headers.items():
                    self.send_header(name, value)
                if not route.unsized:
                    self.send_header("Content-Length", str(len(route.body)))
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    if route.drip:
                        for i in range(len(route.body)):
                            if server._stop.wait(route.delay):
                                return
                            self.wfile.write(route.body[i : i + 1])
                            self.wfile.flush()
                    else:
                        self.wfile.write(route.body)
                except OSError:
                    return  # the client hung up: that is the point of these routes
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve_json(self, path: str, document: Any, **kwargs: Any) -> None:
        self.routes[path] = Route(body=json.dumps(document).encode(), **kwargs)

    def count(self, path: str) -> int:
        return sum(1 for h in self.hits if h.path == path)

    def close(self) -> None:
        self._stop.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def jwks_document(*entries: tuple[str, dict[str, str]]) -> dict[str, Any]:
    return {"keys": [{**jwk, "kid": kid, "use": "sig", "alg": "EdDSA"} for kid, jwk in entries]}


def wait_until(predicate: Callable[[], bool], seconds: float = 5.0) -> bool:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()
