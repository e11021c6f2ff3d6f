"""The deployment's signing credentials (noor.trust.signing): made on first use, rotated under the same CA, a
real chain put in place by path, and every credential C2PA cannot sign with refused in one line naming it."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pydantic
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from noor.config import Settings
from noor.trust import signing
from noor.trust.signing import SigningError

NOW = dt.datetime.now(dt.UTC)


def name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def certificate(
    key: ec.EllipticCurvePrivateKey,
    issuer_key: ec.EllipticCurvePrivateKey,
    subject: str,
    issuer: str,
    *,
    ca: bool = False,
    days: tuple[int, int] = (-1, 365),
    eku: bool = True,
) -> x509.Certificate:
    builder = (
        x509.CertificateBuilder()
        .subject_name(name(subject))
        .issuer_name(name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW + dt.timedelta(days=days[0]))
        .not_valid_after(NOW + dt.timedelta(days=days[1]))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if eku and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


def key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def real(tmp_path: Path) -> dict[str, object]:
    """A CA and a signer it issued, as an operator would put them in place."""
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = certificate(ca_key, ca_key, "Example Root", "Example Root", ca=True, days=(-1, 3650))
    return {"ca_key": ca_key, "key": key, "ca": ca, "dir": tmp_path}


def configured(real: dict[str, object], chain: bytes, key: ec.EllipticCurvePrivateKey | None = None) -> Settings:
    folder = real["dir"]
    assert isinstance(folder, Path)
    (folder / "chain.pem").write_bytes(chain)
    (folder / "key.pem").write_bytes(key_pem(key or real["key"]))  # type: ignore[arg-type]
    return Settings(data_dir=folder / "data", signing_cert=folder / "chain.pem", signing_key=folder / "key.pem")


def test_made_on_first_use_with_private_keys_only_for_the_owner(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert signing.local_deployment_id(settings) is None and signing.trust_anchors(settings) == b""
    credentials = signing.load(settings)
    folder = tmp_path / "signing"
    assert sorted(p.name for p in folder.iterdir()) == ["ca.key", "ca.pem", "signer.key", "signer.pem"]
    assert all(stat.S_IMODE((folder / f).stat().st_mode) == 0o600 for f in ("ca.key", "signer.key"))
    assert credentials.alg == "es256" and len(credentials.deployment_id) == 6
    assert signing.load(settings).key_pem == credentials.key_pem  # made once
    assert signing.local_deployment_id(settings) == credentials.deployment_id
    assert signing.trust_anchors(settings) == (folder / "ca.pem").read_bytes()


def test_a_rotation_is_a_new_signer_key_under_the_same_ca(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(SigningError, match="no deployment CA to rotate under"):
        signing.create(settings, rotate=True)
    before = signing.load(settings)
    with pytest.raises(SigningError, match="use --rotate"):
        signing.create(settings)
    signing.create(settings, rotate=True)
    after = signing.load(settings)
    assert after.key_pem != before.key_pem and after.signer.serial_number != before.signer.serial_number
    assert after.deployment_id == before.deployment_id  # the watermark's id comes from the CA
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing"]  # no staging folder left behind


def test_load_without_making_says_how_to_make_them(tmp_path: Path) -> None:
    with pytest.raises(SigningError, match="run `noor keys signing`"):
        signing.load(Settings(data_dir=tmp_path), create_missing=False)


def test_a_real_chain_by_path_signs_and_its_root_is_trusted(real: dict[str, object]) -> None:
    ca, ca_key, key = real["ca"], real["ca_key"], real["key"]
    signer = certificate(key, ca_key, "Broadcaster signer", "Example Root")  # type: ignore[arg-type]
    settings = configured(real, pem(signer, ca))  # type: ignore[arg-type]
    credentials = signing.load(settings)
    assert credentials.signer == signer and credentials.source == "NOOR_SIGNING_CERT/KEY"
    assert credentials.deployment_id == signing.deployment_id(ca)  # type: ignore[arg-type]
    assert signing.trust_anchors(settings) == pem(ca)  # type: ignore[arg-type]
    assert not (settings.data_dir / "signing").exists()  # nothing made when one is given


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("expired", r"^NOOR_SIGNING_CERT: the signing certificate \(CN=Signer\) expired on \d{4}-\d\d-\d\d$"),
        ("not yet valid", r"^NOOR_SIGNING_CERT: the signing certificate \(CN=Signer\) is not valid until "),
        ("wrong key", r"^NOOR_SIGNING_KEY: the key does not match the signing certificate \(CN=Signer\)$"),
        ("self-signed", r"^NOOR_SIGNING_CERT: the signing certificate \(CN=Signer\) is self-signed; C2PA needs"),
        ("no issuer", r"must be followed by its issuer's certificate$"),
        ("no eku", r"has no extended key usage C2PA accepts"),
        ("a ca", r"is a CA; C2PA needs an end-entity one$"),
        ("garbage", r"^NOOR_SIGNING_CERT: '.*chain.pem' is not a PEM certificate chain$"),
    ],
)
def test_credentials_c2pa_cannot_sign_with_are_one_line(real: dict[str, object], case: str, message: str) -> None:
    ca, ca_key, key = real["ca"], real["ca_key"], real["key"]
    issued = {
        "expired": {"days": (-400, -1)},
        "not yet valid": {"days": (2, 400)},
        "no eku": {"eku": False},
        "a ca": {"ca": True},
    }.get(case, {})
    signer = certificate(key, ca_key, "Signer", "Example Root", **issued)  # type: ignore[arg-type]
    chain = {
        "self-signed": pem(certificate(key, key, "Signer", "Signer")),  # type: ignore[arg-type]
        "no issuer": pem(signer),
        "garbage": b"not a certificate",
    }.get(case, pem(signer, ca))  # type: ignore[arg-type]
    other = ec.generate_private_key(ec.SECP256R1()) if case == "wrong key" else None
    with pytest.raises(SigningError, match=message) as err:
        signing.load(configured(real, chain, other))
    assert "\n" not in str(err.value)


def test_a_missing_key_file_names_its_setting(real: dict[str, object]) -> None:
    settings = configured(real, b"")
    settings.signing_key.unlink()  # type: ignore[union-attr]
    with pytest.raises(SigningError, match=r"^NOOR_SIGNING_KEY: cannot read '.*key.pem': No such file"):
        signing.load(settings)


def test_cert_and_key_are_set_together(tmp_path: Path) -> None:
    with pytest.raises(pydantic.ValidationError, match="set together or not at all"):
        Settings(data_dir=tmp_path, signing_cert=tmp_path / "chain.pem")


def test_workers_starting_together_share_one_set(tmp_path: Path) -> None:
    """Each of several processes that find no credentials makes a set; one rename wins and all load it."""
    from concurrent.futures import ThreadPoolExecutor

    settings = Settings(data_dir=tmp_path)
    with ThreadPoolExecutor(4) as pool:
        loaded = list(pool.map(lambda _: signing.load(settings), range(8)))
    assert len({c.key_pem for c in loaded}) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["signing"]
    assert signing.create(settings, exist_ok=True) == tmp_path / "signing"
