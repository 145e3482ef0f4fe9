"""Server TLS credentials from PEM files: TLS with --tls-cert/--tls-key, mTLS with
--tls-client-ca as well (then a client without a certificate signed by that CA cannot
connect). Files are read once at start-up; rotating them means a restart (a rolling one
under Kubernetes)."""

from __future__ import annotations

from pathlib import Path

import grpc

from dispatchd.security.errors import TLSFilesError


def _read_pem(path: Path, flag: str, marker: bytes) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as e:
        raise TLSFilesError(f"cannot read {flag} file {path}: {e}") from None
    if b"-----BEGIN " not in data or marker not in data:
        raise TLSFilesError(
            f"{flag} file {path} is not PEM with a {marker.decode()} block; convert it with "
            "`openssl x509 -outform pem` (certificates) or `openssl pkey` (keys)"
        )
    return data


def server_credentials(
    cert: Path, key: Path, client_ca: Path | None = None
) -> grpc.ServerCredentials:
    """TLS credentials; with ``client_ca`` every client must present a certificate it signed."""
    chain = _read_pem(cert, "--tls-cert", b"CERTIFICATE")
    private_key = _read_pem(key, "--tls-key", b"PRIVATE KEY")
    roots = _read_pem(client_ca, "--tls-client-ca", b"CERTIFICATE") if client_ca else None
    return grpc.ssl_server_credentials(
        [(private_key, chain)],
        root_certificates=roots,
        require_client_auth=roots is not None,
    )
