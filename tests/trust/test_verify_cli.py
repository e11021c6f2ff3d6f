"""`noor verify FILE` and `noor keys signing` (noor.cli.verify, noor.cli.keys): what they print and their exit
codes (0 trusted, 1 none/tampered/untrusted with one line on stderr, 2 bad input)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np

from noor.config import Settings
from noor.engine import media
from noor.trust import signing, watermark
from noor.trust.provenance import Manifest, Provenance

Noor = Callable[..., tuple[int, str, str]]


def signed_clip(data_dir: Path, folder: Path) -> Path:
    """A 4-frame 320x256 clip marked and signed by the deployment whose data dir is `data_dir`."""
    rng = np.random.default_rng(0)
    clip = np.clip(rng.normal(120, 25, (4, 256, 320, 3)), 0, 255).astype(np.uint8)
    deployment = Provenance.load(Settings(data_dir=data_dir))
    marked, mark = deployment.mark(clip, "gen-42")
    plain = media.write_video(folder / "plain.mp4", marked, 8)
    manifest = Manifest("tiny", "1", "created", "gen-42", region="me-riyadh", marked=mark)
    signed = deployment.sign_files({"video.mp4": plain.read_bytes()}, manifest)["video.mp4"]
    (folder / "video.mp4").write_bytes(signed)
    return folder / "video.mp4"


def test_keys_signing_creates_once_then_rotates(noor: Noor, tmp_path: Path) -> None:
    code, out, err = noor("keys", "signing")
    assert code == 0 and out.startswith(f"signing key created in {tmp_path / 'data' / 'signing'} (deployment id ")
    code, out, err = noor("keys", "signing")
    assert (code, out) == (2, "")
    folder = tmp_path / "data" / "signing"
    assert err == f"noor: error: signing credentials exist in '{folder}'; use --rotate for a new signer key\n"
    code, out, _ = noor("keys", "signing", "--rotate")
    assert code == 0 and out.startswith("signing key rotated in ")


def test_verify_a_signed_file_prints_the_manifest_and_the_mark(noor: Noor, tmp_path: Path) -> None:
    path = signed_clip(tmp_path / "data", tmp_path)
    code, out, err = noor("verify", str(path))
    assert (code, err) == (0, "")
    deployment = signing.local_deployment_id(Settings(data_dir=tmp_path / "data"))
    tag = watermark.generation_tag("gen-42")
    assert out.splitlines()[:2] == [f"{path}  (video/mp4)", "manifest: signed, trusted"]
    for line in [
        "  generation:            gen-42",
        "  model:                 tiny (version 1)",
        "  action:                created (c2pa.created)",
        "  source type:           trainedAlgorithmicMedia",
        "  region:                me-riyadh",
        f"  watermark (manifest):  embedded (deployment {deployment}, generation tag {tag})",
    ]:
        assert line in out.splitlines()
    assert re.fullmatch(
        f"watermark: deployment {deployment}, generation tag {tag} \\(1 frame\\(s\\) read, \\d+% of votes agree\\); "
        "this deployment's mark; matches the manifest's generation",
        out.splitlines()[-1],
    )


def test_verify_exits_1_with_one_line_for_none_tampered_and_untrusted(noor: Noor, tmp_path: Path) -> None:
    path = signed_clip(tmp_path / "data", tmp_path)
    code, out, err = noor("verify", str(tmp_path / "plain.mp4"))
    assert code == 1 and "manifest: none" in out and "watermark: deployment" in out  # stripped, still marked
    assert err == f"noor: {tmp_path / 'plain.mp4'}: no C2PA manifest (never signed, or its manifest was stripped)\n"
    data = bytearray(path.read_bytes())
    data[data.find(b"mdat") + 300] ^= 0x01
    (tmp_path / "tampered.mp4").write_bytes(bytes(data))
    code, out, err = noor("verify", str(tmp_path / "tampered.mp4"))
    assert code == 1 and "manifest: INVALID - tampered" in out
    assert err.count("\n") == 1 and "tampered: the video's bytes changed after it was signed" in err
    other = signed_clip(tmp_path / "other-data", tmp_path / "data")  # another deployment signed it
    code, out, err = noor("verify", str(other))
    assert code == 1 and "signer not trusted" in out and "another deployment's mark" in out
    assert err.count("\n") == 1 and "is not trusted here" in err
    code, _, err = noor("verify", str(other), "--trust", str(tmp_path / "other-data" / "signing" / "ca.pem"))
    assert (code, err) == (0, "")


def test_verify_bad_input_is_exit_2(noor: Noor, tmp_path: Path) -> None:
    code, out, err = noor("verify", str(tmp_path / "missing.mp4"))
    assert (code, out) == (2, "")
    assert err == f"noor: error: FILE: cannot read '{tmp_path / 'missing.mp4'}': No such file or directory\n"
    (tmp_path / "notes.txt").write_text("hello")
    code, _, err = noor("verify", str(tmp_path / "notes.txt"))
    assert code == 2 and err == f"noor: error: FILE: '{tmp_path / 'notes.txt'}' is not an MP4, PNG, JPEG or WebP file\n"
