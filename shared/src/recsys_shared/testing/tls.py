"""A private certificate authority and a server certificate signed by it, for TLS tests
(made with the ``openssl`` command line, as an operator would)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from recsys_shared.processes import free_port


@dataclass(frozen=True)
class Certificates:
    ca: Path
    certificate: Path
    key: Path


def make_certificates(folder: Path) -> Certificates:
    """A CA, and a certificate for 127.0.0.1 and localhost that it signed."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key, ca = folder / "ca.key", folder / "ca.pem"
    key, request, certificate = folder / "server.key", folder / "server.csr", folder / "server.pem"
    extensions = folder / "server.ext"
    extensions.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for command in (
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", "/CN=recsys test CA", "-keyout", ca_key, "-out", ca],
        ["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
         "-keyout", key, "-out", request],
        ["openssl", "x509", "-req", "-in", request, "-CA", ca, "-CAkey", ca_key,
         "-CAcreateserial", "-days", "2", "-extfile", extensions, "-out", certificate],
    ):  # fmt: skip
        subprocess.run([str(part) for part in command], check=True, capture_output=True)
    return Certificates(ca=ca, certificate=certificate, key=key)


def tls_arguments(certificates: Certificates) -> tuple[int, list[str]]:
    """A TLS port and the ``redis-server`` arguments that serve it (clients need not present
    a certificate; the plain port stays for the test's own probes)."""
    port = free_port()
    return port, [
        "--tls-port", str(port),
        "--tls-cert-file", str(certificates.certificate),
        "--tls-key-file", str(certificates.key),
        "--tls-ca-cert-file", str(certificates.ca),
        "--tls-auth-clients", "no",
    ]  # fmt: skip
