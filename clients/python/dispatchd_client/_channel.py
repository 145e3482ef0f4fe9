"""How every client opens its channel: TLS, mTLS and the bearer token, in one place.

:class:`~dispatchd_client.Client`, :class:`~dispatchd_client.AsyncClient`, the
:class:`~dispatchd_client.Worker` and ``dispatchctl`` all build their channel through
:class:`ChannelSpec`, so a security option means the same thing everywhere.

Over TLS the token rides as gRPC call credentials (the core library adds the header). gRPC
refuses call credentials on a plaintext channel, so there a small interceptor adds the
``authorization`` header instead: that is for a server behind a TLS-terminating proxy or a
mesh sidecar; anywhere else a plaintext token can be read off the wire.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from dispatchd_client._requests import CHANNEL_OPTIONS

__all__ = ["TLS", "ChannelSpec"]

PathLike = str | os.PathLike[str]

if TYPE_CHECKING:  # the interceptor bases are generic in the type stubs only
    _SyncUnary: TypeAlias = grpc.UnaryUnaryClientInterceptor[Any, Any]
    _SyncStream: TypeAlias = grpc.StreamStreamClientInterceptor[Any, Any]
    _AioUnary: TypeAlias = grpc.aio.UnaryUnaryClientInterceptor[Any, Any]
    _AioStream: TypeAlias = grpc.aio.StreamStreamClientInterceptor[Any, Any]
else:
    _SyncUnary = grpc.UnaryUnaryClientInterceptor
    _SyncStream = grpc.StreamStreamClientInterceptor
    _AioUnary = grpc.aio.UnaryUnaryClientInterceptor
    _AioStream = grpc.aio.StreamStreamClientInterceptor


def _read(path: PathLike | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True, slots=True)
class TLS:
    """TLS settings of a client channel (PEM bytes; :meth:`from_files` reads files).

    ``root_certificates`` is the CA bundle that signed the server's certificate (None: the
    system's roots). ``certificate_chain`` and ``private_key`` are the client's own certificate
    for a server that requires mTLS. ``server_name`` overrides the name checked against the
    server's certificate (e.g. when connecting through a port-forward to 127.0.0.1).
    """

    root_certificates: bytes | None = None
    certificate_chain: bytes | None = None
    private_key: bytes | None = None
    server_name: str | None = None

    def __post_init__(self) -> None:
        if (self.certificate_chain is None) != (self.private_key is None):
            raise ValueError("a client certificate needs its private key, and the other way round")

    @classmethod
    def from_files(
        cls,
        ca: PathLike | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
        *,
        server_name: str | None = None,
    ) -> TLS:
        """Reads PEM files: the CA bundle and, for mTLS, the client certificate and key."""
        return cls(_read(ca), _read(cert), _read(key), server_name)

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.private_key,
            certificate_chain=self.certificate_chain,
        )


def _check_token(token: str | None) -> str | None:
    if token is None:
        return None
    token = token.strip()
    if not token or any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise ValueError("token must be non-empty printable ASCII without blanks")
    return token


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    """Where and how to connect; ``tls=True`` means TLS with the system's roots."""

    target: str
    tls: TLS | None = None
    token: str | None = None
    extra_options: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def of(
        cls,
        target: str,
        *,
        tls: TLS | bool | None,
        token: str | None,
        extra_options: tuple[tuple[str, Any], ...] = (),
    ) -> ChannelSpec:
        tls_ = TLS() if tls is True else tls or None
        return cls(target, tls_, _check_token(token), extra_options)

    @property
    def _options(self) -> list[tuple[str, Any]]:
        # One value per option: gRPC does not promise which of two it takes.
        merged: dict[str, Any] = {**dict(CHANNEL_OPTIONS), **dict(self.extra_options)}
        options: list[tuple[str, Any]] = list(merged.items())
        if self.tls is not None and self.tls.server_name:
            options.append(("grpc.ssl_target_name_override", self.tls.server_name))
        return options

    def _secure_credentials(self) -> grpc.ChannelCredentials | None:
        if self.tls is None:
            return None
        creds = self.tls.credentials()
        if self.token is None:
            return creds
        return grpc.composite_channel_credentials(
            creds, grpc.access_token_call_credentials(self.token)
        )

    def sync_channel(self) -> grpc.Channel:
        creds = self._secure_credentials()
        if creds is not None:
            return grpc.secure_channel(self.target, creds, options=self._options)
        channel = grpc.insecure_channel(self.target, options=self._options)
        if self.token is None:
            return channel
        return grpc.intercept_channel(channel, _SyncBearer(self.token))

    def aio_channel(self) -> grpc.aio.Channel:
        creds = self._secure_credentials()
        if creds is not None:
            return grpc.aio.secure_channel(self.target, creds, options=self._options)
        interceptors: list[Any] | None = None
        if self.token is not None:
            metadata = _bearer(self.token)
            interceptors = [_AioUnaryBearer(metadata), _AioStreamBearer(metadata)]
        return grpc.aio.insecure_channel(
            self.target, options=self._options, interceptors=interceptors
        )


def _bearer(token: str) -> tuple[str, str]:
    return ("authorization", f"Bearer {token}")


def _with_header(details: Any, header: tuple[str, str], make: Callable[..., Any]) -> Any:
    """A copy of the call details with ``header`` added to the metadata."""
    metadata = [*(details.metadata or ()), header]
    return make(
        details.method, details.timeout, metadata, details.credentials, details.wait_for_ready
    )


class _SyncDetails(grpc.ClientCallDetails):
    def __init__(self, *fields: Any) -> None:
        (self.method, self.timeout, self.metadata, self.credentials, self.wait_for_ready) = fields


class _SyncBearer(_SyncUnary, _SyncStream):
    def __init__(self, token: str) -> None:
        self._header = _bearer(token)

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(_with_header(details, self._header, _SyncDetails), request)

    def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return continuation(_with_header(details, self._header, _SyncDetails), requests)


class _AioUnaryBearer(_AioUnary):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return await continuation(
            _with_header(details, self._header, grpc.aio.ClientCallDetails), request
        )


class _AioStreamBearer(_AioStream):
    def __init__(self, header: tuple[str, str]) -> None:
        self._header = header

    async def intercept_stream_stream(self, continuation: Any, details: Any, requests: Any) -> Any:
        return await continuation(
            _with_header(details, self._header, grpc.aio.ClientCallDetails), requests
        )
