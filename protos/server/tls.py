"""TLS for both transports, server and client side, from PEM files.

A server given a certificate and key serves REST over HTTPS and gRPC over TLS on the
same ports; given a client CA too, it requires every client to present a certificate
that CA signed (mutual TLS) and refuses the handshake otherwise. Clients (the gateway
calling its pods, explainers calling models) trust ``ca_file`` (or the system's CAs)
and may present a certificate of their own.

TLS 1.2 is the oldest version accepted.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

__all__ = ["ServerTls", "ClientTls"]


def _read(path: str | Path | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


@dataclass(frozen=True, slots=True)
class ServerTls:
    """A server's certificate chain and key, and the CA of its clients (mTLS).

    Attributes:
        cert: PEM certificate chain file.
        key: PEM private key file.
        client_ca: PEM CA bundle; when set, clients must present a certificate it signed.
    """

    cert: Path
    key: Path
    client_ca: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """The REST server's context.

        Raises:
            OSError, ssl.SSLError: a file is missing or not a matching PEM cert/key.
        """
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(cafile=str(self.client_ca))
            context.verify_mode = ssl.CERT_REQUIRED
        return context

    def grpc_credentials(self):
        """The gRPC server's credentials (client certificates required with a CA)."""
        import grpc

        return grpc.ssl_server_credentials(
            [(_read(self.key), _read(self.cert))], root_certificates=_read(self.client_ca),
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True, slots=True)
class ClientTls:
    """What a client trusts and presents.

    Attributes:
        ca_file: PEM CA bundle the server's certificate must chain to; None: the
            system's trusted CAs.
        cert: PEM client certificate (mTLS), or None.
        key: PEM key of ``cert``, or None.
    """

    ca_file: Path | None = None
    cert: Path | None = None
    key: Path | None = None

    def ssl_context(self) -> ssl.SSLContext:
        """A verifying client context (hostname checked)."""
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if self.ca_file is None else str(self.ca_file)
        )
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        return context

    def grpc_credentials(self):
        """gRPC channel credentials."""
        import grpc

        return grpc.ssl_channel_credentials(
            root_certificates=_read(self.ca_file), private_key=_read(self.key),
            certificate_chain=_read(self.cert),
        )
