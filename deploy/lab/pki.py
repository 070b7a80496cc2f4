"""The lab's own certificate authority: a CA, and a server certificate for the controller's API.

Made at `underlay-lab up` (and for each test controller), so agents talk to the controller over TLS
and check its certificate against the lab's CA (`underlay-agent --ca-file`), as in production with
a real CA. Keys are EC P-256: a handshake costs a fraction of an RSA one. With the `cryptography`
package, so nothing is shelled out and errors are exceptions.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=365)
CONTROLLER_NAMES = ("underlay-controller.underlay-system.svc", "underlay-controller.underlay-system.svc.cluster.local")
"""The names agents in a cluster reach the controller's REST Service by: its certificate carries them."""


@dataclass(frozen=True)
class ServerFiles:
    ca: Path  # what clients trust
    cert: Path
    key: Path


@dataclass(frozen=True)
class Authority:
    """A CA whose key signs server and client certificates (all PEM files in one directory)."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    path: Path

    @classmethod
    def create(cls, directory: Path, *, name: str = "underlay lab CA") -> Authority:
        directory.mkdir(parents=True, exist_ok=True)
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        cert = (_builder(subject, subject, key.public_key())
                .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                             key_encipherment=False, data_encipherment=False, key_agreement=False,
                                             key_cert_sign=True, crl_sign=True, encipher_only=False,
                                             decipher_only=False), critical=True)
                .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
                .sign(key, hashes.SHA256()))  # fmt: skip
        path = directory / "ca.pem"
        path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return cls(cert, key, path)

    def issue(self, directory: Path, name: str, *, ip: str | None = None, dns: Sequence[str] = (),
              client: bool = False, common_name: str | None = None,
              organizations: Sequence[str] = ()) -> tuple[Path, Path]:
        """A certificate for `name` (a server at `ip` and the DNS names `dns`, or a client) and its
        key: (`name`.pem, `name`.key). Kubernetes reads a client certificate's CN (`common_name`,
        default `name`) as the user and its O entries (`organizations`) as the groups."""
        key = ec.generate_private_key(ec.SECP256R1())
        usage = ExtendedKeyUsageOID.CLIENT_AUTH if client else ExtendedKeyUsageOID.SERVER_AUTH
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, group) for group in organizations]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name or name))
        builder = (_builder(x509.Name(subject), self.cert.subject,
                            key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
                   .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                                  critical=False))  # fmt: skip
        names: list[x509.GeneralName] = [x509.DNSName(each) for each in dns]
        names += [] if ip is None else [x509.IPAddress(ipaddress.ip_address(ip))]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        cert_path.write_bytes(builder.sign(self.key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))
        key_path.touch(mode=0o600)
        key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        return cert_path, key_path


def server_files(directory: Path, *, ip: str, dns: Sequence[str] = CONTROLLER_NAMES) -> ServerFiles:
    """A new CA in `directory` and a certificate from it for a server at `ip` and named `dns` (by
    default the controller's Service names, so agents in a cluster may reach it by name)."""
    authority = Authority.create(directory)
    cert, key = authority.issue(directory, "server", ip=ip, dns=dns)
    return ServerFiles(ca=authority.path, cert=cert, key=key)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALIDITY))  # fmt: skip
