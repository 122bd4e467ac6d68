"""Test helpers for auth and TLS: a token file with one token per scope, and a private
CA (``trustme``) with server and client certificates for 127.0.0.1."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import yaml

from protos.server.auth import SCOPES, AuthPolicy, hash_token

__all__ = ["Tokens", "write_tokens", "Certificates", "make_certificates", "bearer"]


@dataclass(frozen=True, slots=True)
class Tokens:
    """A token file and the plain tokens it hashes: one per scope, keyed by scope."""

    path: Path
    by_scope: dict[str, str]

    def policy(self, **kwargs) -> AuthPolicy:
        return AuthPolicy.from_file(self.path, **kwargs)


def write_tokens(folder: Path) -> Tokens:
    """A token file in ``folder`` with one random token per scope."""
    by_scope = {scope: secrets.token_urlsafe(24) for scope in SCOPES}
    entries = [{"name": f"{scope}-client", "sha256": hash_token(token), "scopes": [scope]}
               for scope, token in by_scope.items()]
    path = folder / "tokens.yaml"
    path.write_text(yaml.safe_dump(entries))
    return Tokens(path, by_scope)


def bearer(token: str | None) -> dict[str, str]:
    """The ``Authorization`` header of ``token`` (none for None)."""
    return {"Authorization": f"Bearer {token}"} if token else {}


@dataclass(frozen=True, slots=True)
class Certificates:
    """PEM files: the CA, a server certificate and key for 127.0.0.1/localhost, and a
    client certificate and key signed by the same CA; ``other_ca`` signed nothing here."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_ca: Path


def make_certificates(folder: Path) -> Certificates:
    """Generate a fresh CA and certificates into ``folder``."""
    import trustme

    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("arbiter-gateway@example.org")
    other = trustme.CA()
    paths = {name: folder / f"{name}.pem" for name in (
        "ca", "server_cert", "server_key", "client_cert", "client_key", "other_ca")}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    server.cert_chain_pems[0].write_to_path(str(paths["server_cert"]))
    for blob in server.cert_chain_pems[1:]:
        blob.write_to_path(str(paths["server_cert"]), append=True)
    server.private_key_pem.write_to_path(str(paths["server_key"]))
    client.cert_chain_pems[0].write_to_path(str(paths["client_cert"]))
    client.private_key_pem.write_to_path(str(paths["client_key"]))
    other.cert_pem.write_to_path(str(paths["other_ca"]))
    return Certificates(**paths)
