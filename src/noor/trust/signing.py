"""The deployment's signing credentials for C2PA manifests: a key and its certificate chain.

By default they are made on first use in the data dir (`signing/`): a self-signed CA ("Noor deployment CA",
20 years) and a signer certificate it issues (EC P-256 for ES256, 2 years), because C2PA refuses to sign with a
self-signed certificate and wants a signer certificate that is not a CA, has the digitalSignature key usage and
one of the extended key usages its trust model allows (here emailProtection and documentSigning). `noor keys
signing` makes them, or a new signer certificate under the same CA (a rotation: files signed before still
verify, and the deployment id, which comes from the CA, stays the same).

A real certificate replaces them by path: NOOR_SIGNING_CERT (PEM, the signer certificate first, then the
issuers up to, not necessarily including, the root) and NOOR_SIGNING_KEY (its PEM private key, unencrypted);
NOOR_SIGNING_TRUST names a PEM file of the CAs `noor verify` trusts besides this deployment's own.

Every check that C2PA would otherwise fail with at the first signed file (a key that does not match, a
certificate that expired or is not valid yet, a self-signed or CA signer, no chain) is made when the
credentials load, as one line naming the setting and what is wrong.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID, ObjectIdentifier

if TYPE_CHECKING:
    from noor.config import Settings

CA_DAYS = 20 * 365
SIGNER_DAYS = 2 * 365
FOLDER = "signing"  # in the data dir
CA_CERT, CA_KEY, SIGNER_CERT, SIGNER_KEY = "ca.pem", "ca.key", "signer.pem", "signer.key"

# The extended key usages C2PA's trust model accepts for a claim signer (C2PA 2.1, "Certificate profile"):
# emailProtection, documentSigning, and C2PA's own claim-signing purpose.
C2PA_CLAIM_SIGNING = ObjectIdentifier("1.3.6.1.4.1.62558.2.1")
SIGNER_EKUS = {
    ExtendedKeyUsageOID.EMAIL_PROTECTION,
    ObjectIdentifier("1.3.6.1.5.5.7.3.36"),  # id-kp-documentSigning (RFC 9336)
    C2PA_CLAIM_SIGNING,
}


class SigningError(ValueError):
    """Signing credentials that cannot sign: one line naming the setting (or file) and what is wrong."""


@dataclass(frozen=True)
class Credentials:
    """What c2pa's signer takes (the chain and the key, PEM, and the algorithm) and the id the watermark
    carries."""

    alg: str  # c2pa's name: es256, es384, es512, ps256, ed25519
    chain_pem: bytes  # the signer certificate first, then its issuers
    key_pem: bytes
    signer: x509.Certificate
    deployment_id: str  # 6 hex digits: a hash of the top certificate's public key (the CA's, by default)
    source: str  # where they came from, for messages: the folder or the settings

    @property
    def not_after(self) -> dt.datetime:
        return self.signer.not_valid_after_utc


def folder(settings: Settings) -> Path:
    return settings.data_dir / FOLDER


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [x509.NameAttribute(NameOID.COMMON_NAME, common_name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Noor")]
    )


def _key_usage(*, sign: bool, ca: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _issue_signer(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey, now: dt.datetime, days: int
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("Noor deployment signer"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # clocks of other machines that verify may lag
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign=True, ca=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _new_ca(now: dt.datetime) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"Noor deployment CA {os.urandom(4).hex()}")  # two deployments' CAs never share a name
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign=False, ca=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def create(settings: Settings, *, rotate: bool = False, exist_ok: bool = False, signer_days: int = SIGNER_DAYS) -> Path:
    """Make the deployment's CA and signer in the data dir, or (rotate) a new signer key and certificate under
    the existing CA. Files are written to a new folder that replaces the old one in one rename, so a signer never
    reads half a set, and of two processes making them at once one set wins (`exist_ok`: no error for the other).
    Returns the folder."""
    target = folder(settings)
    now = dt.datetime.now(dt.UTC)
    if rotate and not (target / CA_KEY).exists():
        raise SigningError(f"no deployment CA to rotate under in {str(target)!r}; create one first (without --rotate)")
    if not rotate and target.exists():
        if exist_ok:
            return target
        raise SigningError(f"signing credentials exist in {str(target)!r}; use --rotate for a new signer key")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".signing.", dir=settings.data_dir))
    try:
        if rotate:
            ca = x509.load_pem_x509_certificate((target / CA_CERT).read_bytes())
            ca_key = serialization.load_pem_private_key((target / CA_KEY).read_bytes(), None)
            if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
                raise SigningError(f"{str(target / CA_KEY)!r} is not the EC key Noor made")
        else:
            ca, ca_key = _new_ca(now)
        signer, key = _issue_signer(ca, ca_key, now, signer_days)
        (staging / CA_CERT).write_bytes(_pem(ca))
        _write_private(staging / CA_KEY, _key_pem(ca_key))
        (staging / SIGNER_CERT).write_bytes(_pem(signer) + _pem(ca))
        _write_private(staging / SIGNER_KEY, _key_pem(key))
        if rotate:
            old = target.with_name(f".{FOLDER}.old.{os.getpid()}")
            os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old)
        else:
            try:
                os.rename(staging, target)
            except OSError:  # another process made them first: theirs stand
                if not (target / SIGNER_KEY).exists():
                    raise
                if not exist_ok:
                    raise SigningError(f"signing credentials exist in {str(target)!r}; use --rotate") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging)
    return target


def _read(path: Path, setting: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as err:
        raise SigningError(f"{setting}: cannot read {str(path)!r}: {err.strerror or err}") from None


def _load_chain(data: bytes, setting: str, path: Path) -> list[x509.Certificate]:
    try:
        chain = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise SigningError(f"{setting}: {str(path)!r} is not a PEM certificate chain") from None
    return chain


def _alg(key: object, setting: str) -> str:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algs = {"secp256r1": "es256", "secp384r1": "es384", "secp521r1": "es512"}
        if key.curve.name not in algs:
            raise SigningError(f"{setting}: EC curve {key.curve.name} cannot sign C2PA (P-256, P-384 or P-521)")
        return algs[key.curve.name]
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return "ed25519"
    if isinstance(key, rsa.RSAPrivateKey):
        return "ps256"
    raise SigningError(f"{setting}: a {type(key).__name__} cannot sign C2PA (EC, Ed25519 or RSA)")


def _matches(key: object, cert: x509.Certificate) -> bool:
    public = getattr(key, "public_key", None)
    if public is None:
        return False
    mine = public().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    theirs = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(mine == theirs)


def _issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def check_signer(chain: list[x509.Certificate], setting: str, now: dt.datetime | None = None) -> None:
    """The checks C2PA makes of a signer certificate, as one line naming the setting."""
    now = now or dt.datetime.now(dt.UTC)
    signer = chain[0]
    who = signer.subject.rfc4514_string()
    if signer.not_valid_after_utc < now:
        raise SigningError(
            f"{setting}: the signing certificate ({who}) expired on {signer.not_valid_after_utc:%Y-%m-%d}"
        )
    if signer.not_valid_before_utc > now:
        raise SigningError(
            f"{setting}: the signing certificate ({who}) is not valid until "
            f"{signer.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"
        )
    if signer.issuer == signer.subject:
        raise SigningError(f"{setting}: the signing certificate ({who}) is self-signed; C2PA needs one a CA issued")
    try:
        constraints = signer.extensions.get_extension_for_class(x509.BasicConstraints).value
        if constraints.ca:
            raise SigningError(f"{setting}: the signing certificate ({who}) is a CA; C2PA needs an end-entity one")
    except x509.ExtensionNotFound:
        pass
    try:
        usage = signer.extensions.get_extension_for_class(x509.KeyUsage).value
        if not usage.digital_signature:
            raise SigningError(f"{setting}: the signing certificate ({who}) lacks the digitalSignature key usage")
    except x509.ExtensionNotFound:
        pass
    try:
        ekus = set(signer.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = set()
    if not ekus & SIGNER_EKUS:
        raise SigningError(
            f"{setting}: the signing certificate ({who}) has no extended key usage C2PA accepts "
            "(emailProtection, documentSigning or C2PA claim signing)"
        )
    if len(chain) < 2 or not _issued_by(signer, chain[1]):
        raise SigningError(f"{setting}: the signing certificate ({who}) must be followed by its issuer's certificate")


def deployment_id(top: x509.Certificate) -> str:
    """6 hex digits from a certificate's public key: what the watermark says made a file."""
    der = top.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(der).hexdigest()[:6]


def load(settings: Settings, *, create_missing: bool = True) -> Credentials:
    """The deployment's credentials: NOOR_SIGNING_CERT/KEY if set, else the data dir's (made on first use unless
    `create_missing` is False); SigningError (one line) when they cannot sign."""
    if settings.signing_cert is not None and settings.signing_key is not None:
        cert_path, key_path = settings.signing_cert, settings.signing_key
        cert_setting, key_setting, source = "NOOR_SIGNING_CERT", "NOOR_SIGNING_KEY", "NOOR_SIGNING_CERT/KEY"
    else:
        where = folder(settings)
        if not (where / SIGNER_KEY).exists():
            if not create_missing:
                raise SigningError(f"no signing key in {str(where)!r}; run `noor keys signing`")
            create(settings, exist_ok=True)  # another worker may be making them this moment
        cert_path, key_path = where / SIGNER_CERT, where / SIGNER_KEY
        cert_setting, key_setting, source = str(cert_path), str(key_path), str(where)
    chain_pem, key_pem = _read(cert_path, cert_setting), _read(key_path, key_setting)
    chain = _load_chain(chain_pem, cert_setting, cert_path)
    try:
        key = serialization.load_pem_private_key(key_pem, None)
    except (ValueError, TypeError) as err:
        reason = "is encrypted (give an unencrypted key)" if "encrypted" in str(err).lower() else "is not a PEM key"
        raise SigningError(f"{key_setting}: {str(key_path)!r} {reason}") from None
    alg = _alg(key, key_setting)
    if not _matches(key, chain[0]):
        raise SigningError(
            f"{key_setting}: the key does not match the signing certificate ({chain[0].subject.rfc4514_string()})"
        )
    check_signer(chain, cert_setting)
    return Credentials(
        alg=alg,
        chain_pem=chain_pem,
        key_pem=key_pem,
        signer=chain[0],
        deployment_id=deployment_id(chain[-1]),
        source=source,
    )


def local_deployment_id(settings: Settings) -> str | None:
    """This deployment's id (what its watermarks carry) without making credentials: None when it has none yet."""
    path = settings.signing_cert if settings.signing_cert is not None else folder(settings) / SIGNER_CERT
    if not path.exists():
        return None
    return deployment_id(_load_chain(_read(path, str(path)), str(path), path)[-1])


def trust_anchors(settings: Settings) -> bytes:
    """The CAs `verify` trusts, PEM: this deployment's own CA (if it made one), the top of NOOR_SIGNING_CERT's
    chain when that is a self-signed root the operator put there, and NOOR_SIGNING_TRUST. Makes no files."""
    anchors = b""
    own = folder(settings) / CA_CERT
    if own.exists():
        anchors += own.read_bytes()
    if settings.signing_cert is not None:
        top = _load_chain(_read(settings.signing_cert, "NOOR_SIGNING_CERT"), "NOOR_SIGNING_CERT", settings.signing_cert)
        if top[-1].issuer == top[-1].subject:
            anchors += _pem(top[-1])
    if settings.signing_trust is not None:
        extra = _read(settings.signing_trust, "NOOR_SIGNING_TRUST")
        _load_chain(extra, "NOOR_SIGNING_TRUST", settings.signing_trust)
        anchors += extra
    return anchors


__all__ = ["Credentials", "SigningError", "check_signer", "create", "deployment_id", "load", "trust_anchors"]
