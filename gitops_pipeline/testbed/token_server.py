"""A token server for registry bearer authentication, and a registry that trusts it.

Implements the issuing side of distribution's token authentication: ``GET /token?service=..
&scope=..`` (optionally with HTTP basic credentials) answers a JWT signed with an ECDSA P-256
key, and :func:`start_token_registry` starts ``docker-registry`` configured with
``auth: token`` to accept exactly those JWTs. No JWT library is needed: ES256 is a few lines
with ``cryptography``.

docker-registry 2.8 verifies a JWT by its header: with ``x5c`` it checks the certificate chain
against ``rootcertbundle``; with only ``kid`` it looks the key up among the public keys of the
certificates in ``rootcertbundle`` by their libtrust key ID (:func:`libtrust_key_id`). This
server sends ``kid``. The claims must carry ``iss`` equal to the configured issuer, ``aud``
equal to the configured service, ``exp``/``nbf`` around now, and an ``access`` list of
``{type, name, actions}`` for what the request needs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import shutil
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

from gitops_pipeline.testbed.loopback_http import LoopbackHTTP
from gitops_pipeline.testbed.process import HOST, free_port
from gitops_pipeline.testbed.registry import RegistryServer, serve_registry

ISSUER = "gitops-pipeline-testbed-issuer"
SERVICE = "gitops-pipeline-testbed-registry"


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def libtrust_key_id(public_key: ec.EllipticCurvePublicKey) -> str:
    """The key ID docker's libtrust gives a public key (what the JWT ``kid`` must be).

    SHA-256 of the DER ``SubjectPublicKeyInfo``, first 240 bits, base32, in twelve groups of
    four characters joined by ``:``.
    """
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode("ascii")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


@dataclass(frozen=True)
class SigningKey:
    """An ECDSA P-256 key and a self-signed certificate for it (the registry's trust root)."""

    private_key: ec.EllipticCurvePrivateKey
    certificate_pem: bytes

    @classmethod
    def generate(cls, common_name: str = ISSUER) -> SigningKey:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(days=1))
            .sign(key, hashes.SHA256())
        )
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))

    @property
    def key_id(self) -> str:
        return libtrust_key_id(self.private_key.public_key())

    def sign_jwt(self, claims: dict[str, Any]) -> str:
        """A compact JWS (ES256): the signature is raw ``r || s``, not DER, as JWS requires."""
        header = {"typ": "JWT", "alg": "ES256", "kid": self.key_id}
        signing_input = (
            f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        )
        der = self.private_key.sign(signing_input.encode("ascii"), ec.ECDSA(hashes.SHA256()))
        r, s = decode_dss_signature(der)
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered (or refused): who asked for what."""

    service: str
    scopes: tuple[str, ...]
    user: str | None
    granted: bool


@dataclass(eq=False)
class TokenServer:
    """An http token server on loopback, running in a thread.

    With ``users`` (name -> password) requests must authenticate with HTTP basic auth, unless
    ``allow_anonymous``; every authenticated or allowed request is granted all it asks for.
    ``answer_fields`` names the JSON fields that carry the token (the spec allows ``token``,
    ``access_token`` or both). ``requests`` records every request.
    """

    key: SigningKey = field(default_factory=SigningKey.generate)
    users: dict[str, str] = field(default_factory=dict)
    allow_anonymous: bool = True
    lifetime: int = 300
    answer_fields: tuple[str, ...] = ("token", "access_token")
    issuer: str = ISSUER
    requests: list[TokenRequest] = field(default_factory=list)
    _http: LoopbackHTTP | None = field(default=None, init=False, repr=False)

    @property
    def realm(self) -> str:
        if self._http is None:
            raise RuntimeError("token server not started")
        return f"http://{self._http.address}/token"

    def start(self) -> Self:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                status, body = server._answer(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._http = LoopbackHTTP(Handler, "token-server")
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()

    def _user(self, authorization: str | None) -> tuple[str | None, bool]:
        """The authenticated user (or None) and whether the request may proceed."""
        if authorization is None or not authorization.startswith("Basic "):
            return None, self.allow_anonymous or not self.users
        try:
            user, _, password = base64.b64decode(authorization[6:]).decode().partition(":")
        except ValueError:
            return None, False
        return user, secrets.compare_digest(self.users.get(user, "\0"), password)

    def _answer(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        if urlsplit(path).path != "/token":
            return 404, b'{"error": "not found"}'
        query = parse_qs(urlsplit(path).query)
        service = query.get("service", [""])[0]
        scopes = tuple(query.get("scope", []))
        user, allowed = self._user(authorization)
        self.requests.append(TokenRequest(service, scopes, user, allowed))
        if not allowed:
            return 401, b'{"error": "authentication failed"}'
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": user or "",
            "aud": service,
            "exp": now + self.lifetime,
            "nbf": now - 10,
            "iat": now,
            "jti": secrets.token_hex(8),
            "access": [_access(scope) for scope in scopes],
        }
        token = self.key.sign_jwt(claims)
        answer: dict[str, Any] = {name: token for name in self.answer_fields}
        answer["expires_in"] = self.lifetime
        return 200, json.dumps(answer).encode()


def _access(scope: str) -> dict[str, Any]:
    """``repository:team/app:pull,push`` -> an access entry granting exactly that."""
    kind, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


def start_token_registry(
    workdir: Path,
    tokens: TokenServer,
    *,
    storage_dir: Path | None = None,
    service: str = SERVICE,
) -> RegistryServer:
    """Start ``docker-registry`` with ``auth: token`` trusting ``tokens``' signing key.

    ``storage_dir`` lets it serve the storage of another (anonymous) registry, which is how
    tests fill it: push there, read here.
    """
    binary = shutil.which("docker-registry") or "/usr/bin/docker-registry"
    workdir = workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    storage = (storage_dir or workdir / "storage").resolve()
    storage.mkdir(parents=True, exist_ok=True)
    bundle = workdir / "token-issuer.pem"
    bundle.write_bytes(tokens.key.certificate_pem)
    port = free_port(HOST)
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "formatter": "text"},
        "storage": {
            "filesystem": {"rootdirectory": str(storage)},
            "maintenance": {"uploadpurging": {"enabled": False}},
        },
        "http": {"addr": f"{HOST}:{port}", "secret": secrets.token_hex(16)},
        "auth": {
            "token": {
                "realm": tokens.realm,
                "service": service,
                "issuer": tokens.issuer,
                "rootcertbundle": str(bundle),
            }
        },
    }
    process = serve_registry(binary, workdir, config, ready=(401,))
    return RegistryServer(process=process, port=port, storage_dir=storage)
