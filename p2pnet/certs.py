# -*- test-case-name: test.unit.test_certs -*-
"""The TLS certificate: the configured one, or one made on first start in the data directory."""

from __future__ import annotations

import datetime
import ipaddress
import re

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import SSL, crypto
from twisted.internet import ssl
from twisted.internet.interfaces import IOpenSSLContextFactory
from zope.interface import implementer

from p2pnet.errors import ConfigError
from p2pnet.files import writePrivate

__all__ = ["ReloadableTLS", "generateSelfSigned", "loadServerTLS"]

_PEM_CERT = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----", re.S)


def generateSelfSigned(certPath: str, keyPath: str, commonName: str = "p2pnet") -> None:
    """Write a new self-signed ECDSA P-256 certificate valid for ten years.

    The key file is created with mode 0600 before any secret is written to it.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, commonName)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                ]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    writePrivate(
        keyPath,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    with open(certPath, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))


def _read(path: str, key: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise ConfigError(key, f"cannot read {path}: {e.strerror}") from None


def loadServerTLS(certPath: str, keyPath: str) -> ssl.CertificateOptions:
    """TLS server options from PEM files: leaf certificate first, then any chain.

    @raise ConfigError: naming C{tls-cert} or C{tls-key} when a file is unreadable,
        not PEM, or the key does not belong to the certificate.
    """
    certData = _read(certPath, "tls-cert")
    keyData = _read(keyPath, "tls-key")
    blocks = _PEM_CERT.findall(certData)
    if not blocks:
        raise ConfigError("tls-cert", f"{certPath} holds no PEM certificate")
    try:
        chain = [crypto.load_certificate(crypto.FILETYPE_PEM, b) for b in blocks]
    except crypto.Error:
        raise ConfigError("tls-cert", f"{certPath} holds a malformed certificate") from None
    try:
        pkey = crypto.load_privatekey(crypto.FILETYPE_PEM, keyData)
    except crypto.Error:
        raise ConfigError("tls-key", f"{keyPath} holds no usable PEM private key") from None
    try:
        options = ssl.CertificateOptions(
            privateKey=pkey, certificate=chain[0], extraCertChain=chain[1:]
        )
        options.getContext()  # checks that the key belongs to the certificate
        return options
    except Exception:
        raise ConfigError("tls-key", f"{keyPath} does not match {certPath}") from None


@implementer(IOpenSSLContextFactory)
class ReloadableTLS:
    """Server TLS options whose certificate can be replaced while listeners run.

    Twisted's TLS factory asks its (old-style) context factory for a context at every
    new connection, so handing listeners this object instead of the options themselves
    lets a reload (L{replace}) serve the next handshake with the new certificate, while
    connections already up keep theirs.
    """

    def __init__(self, options: ssl.CertificateOptions) -> None:
        self.options = options

    def getContext(self) -> SSL.Context:
        """The current certificate's context (made once per certificate)."""
        return self.options.getContext()

    def replace(self, options: ssl.CertificateOptions) -> None:
        """Serve C{options}' certificate to new connections from now on."""
        self.options = options

