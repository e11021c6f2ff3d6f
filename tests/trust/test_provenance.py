"""Signed C2PA manifests on Noor's outputs (noor.trust.provenance): the worker's two calls (mark the frames,
sign the encoded files) round-trip through c2pa-python's reader for MP4, PNG and JPEG; a tampered file, a
stripped one and another deployment's signature are told apart; the deployment's switches turn each part off."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path

import c2pa
import numpy as np
import pytest

from noor.config import Settings
from noor.engine import media
from noor.trust import provenance, signing, watermark
from noor.trust.provenance import Ingredient, Manifest, Provenance, ProvenanceError
from tests.trust.outputs import check_output

WHEN = dt.datetime(2026, 12, 5, 10, 0, tzinfo=dt.UTC)


def frames(num_frames: int = 4, width: int = 320, height: int = 256) -> np.ndarray:
    """A moving disc on a gradient, (T, H, W, 3) uint8."""
    y, x = np.mgrid[0:height, 0:width]
    out = np.empty((num_frames, height, width, 3), np.uint8)
    for t in range(num_frames):
        disc = (x - 80 - 20 * t) ** 2 + (y - 128) ** 2 < 40**2
        out[t, ..., 0] = np.where(disc, 220, 40 + x * 150 // width)
        out[t, ..., 1] = 60 + y * 120 // height
        out[t, ..., 2] = np.where(disc, 30, 200)
    return out


def encode(result: np.ndarray, tmp: Path, image_format: str = "png") -> dict[str, bytes]:
    """What the worker's encode() writes: the clip or image and a JPEG thumbnail."""
    main = (
        media.write_image(tmp / f"image.{image_format}", result[0])
        if len(result) == 1
        else media.write_video(tmp / "video.mp4", result, 8)
    )
    thumb = media.write_image(tmp / "thumbnail.jpg", media.thumbnail(result))
    return {main.name: main.read_bytes(), thumb.name: thumb.read_bytes()}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


def stamped(settings: Settings, tmp_path: Path, result: np.ndarray, image_format: str = "png", **manifest: object):
    """The worker's path: mark the frames, encode, sign the files. Returns (files, manifest)."""
    deployment = Provenance.load(settings)
    marked, mark = deployment.mark(result, "gen-0001")
    fields = {"model": "tiny", "model_version": "1", "action": "created", "generation_id": "gen-0001"}
    made = Manifest(**{**fields, "region": "me-riyadh", "created_at": WHEN, "marked": mark, **manifest})  # type: ignore[arg-type]
    return deployment.sign_files(encode(marked, tmp_path, image_format), made), made


@pytest.mark.parametrize(("kind", "name", "mime"), [
    ("video", "video.mp4", "video/mp4"),
    ("png", "image.png", "image/png"),
    ("jpeg", "image.jpg", "image/jpeg"),
])  # fmt: skip
def test_sign_and_verify_round_trip(settings: Settings, tmp_path: Path, kind: str, name: str, mime: str) -> None:
    result = frames(4 if kind == "video" else 1)
    files, _ = stamped(settings, tmp_path, result, "jpg" if kind == "jpeg" else "png")
    assert sorted(files) == sorted([name, "thumbnail.jpg"])
    anchors = signing.trust_anchors(settings)
    verdict = provenance.verify(files[name], anchors=anchors)
    assert (verdict.status, verdict.problem) == ("trusted", "")
    fields = verdict.fields
    assert fields["digital_source_type"] == "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
    assert (fields["model"], fields["model_version"], fields["region"]) == ("tiny", "1", "me-riyadh")
    assert (fields["action"], fields["c2pa_action"], fields["generation_id"]) == ("created", "c2pa.created", "gen-0001")
    assert fields["created_at"] == WHEN.isoformat() and fields["claim_generator"] == "Noor 0.1.0"
    tag = watermark.generation_tag("gen-0001")
    assert fields["watermark_claimed"]["embedded"] and fields["watermark_claimed"]["generation_tag"] == tag
    # what the pixels say agrees with the manifest
    reading = watermark.read(provenance.frames_of(files[name], mime))
    assert reading.mark == watermark.Mark(signing.load(settings).deployment_id, tag)
    # c2pa-python's own reader, with the deployment's CA as its trust anchor, says the same
    context = c2pa.Context(c2pa.Settings.from_dict({"trust": {"trust_anchors": anchors.decode()}}))
    with c2pa.Reader(mime, io.BytesIO(files[name]), context=context) as reader:
        assert reader.get_validation_state() == "Trusted"
    # the thumbnail is signed too, and says it is a copy too small to carry the mark
    thumb = provenance.verify(files["thumbnail.jpg"], anchors=anchors)
    assert thumb.status == "trusted" and not thumb.fields["watermark_claimed"]["embedded"]
    assert "does not carry their mark" in thumb.fields["watermark_claimed"]["reason"]


def test_an_edit_names_its_source_as_the_parent_ingredient(settings: Settings, tmp_path: Path) -> None:
    (tmp_path / "first").mkdir()
    source, _ = stamped(settings, tmp_path / "first", frames(4))
    parent = Ingredient("generation gen-0000/video.mp4", source["video.mp4"], "video/mp4", "parentOf")
    files, _ = stamped(settings, tmp_path, frames(4), action="upscaled", ingredients=(parent,))
    verdict = provenance.verify(files["video.mp4"], anchors=signing.trust_anchors(settings))
    assert verdict.status == "trusted"
    assert (verdict.fields["action"], verdict.fields["c2pa_action"]) == ("upscaled", "c2pa.resized")
    assert verdict.fields["ingredients"] == ["generation gen-0000/video.mp4 (parentOf)"]
    actions = next(a for a in verdict.manifest["assertions"] if a["label"] == "c2pa.actions.v2")["data"]["actions"]  # type: ignore[index]
    assert [a["action"] for a in actions] == ["c2pa.opened", "c2pa.resized"]


def test_keyframes_are_input_ingredients_of_a_created_clip(settings: Settings, tmp_path: Path) -> None:
    keyframe = media.write_image(tmp_path / "start.png", frames(1)[0]).read_bytes()
    files, _ = stamped(
        settings, tmp_path, frames(4), ingredients=(Ingredient("upload start.png", keyframe, "image/png", "inputTo"),)
    )
    verdict = provenance.verify(files["video.mp4"], anchors=signing.trust_anchors(settings))
    assert verdict.status == "trusted" and verdict.fields["ingredients"] == ["upload start.png (inputTo)"]


@pytest.mark.parametrize("name", ["video.mp4", "image.png"])
def test_changed_media_bytes_are_tampering(settings: Settings, tmp_path: Path, name: str) -> None:
    files, _ = stamped(settings, tmp_path, frames(4 if name.endswith("mp4") else 1))
    data = bytearray(files[name])
    at = data.find(b"mdat" if name.endswith("mp4") else b"IDAT") + 200
    data[at] ^= 0x01
    verdict = provenance.verify(bytes(data), anchors=signing.trust_anchors(settings))
    assert verdict.status == "invalid" and not verdict.ok
    assert verdict.problem.startswith("tampered: the") and "mismatch" in verdict.problem
    assert "\n" not in verdict.problem


def test_a_changed_manifest_is_tampering(settings: Settings, tmp_path: Path) -> None:
    files, _ = stamped(settings, tmp_path, frames(1))
    data = files["image.png"]
    assert data.count(b"me-riyadh") == 1  # in the CBOR of Noor's assertion
    verdict = provenance.verify(data.replace(b"me-riyadh", b"eu-berlin"), anchors=signing.trust_anchors(settings))
    assert verdict.status == "invalid" and verdict.problem.startswith("tampered:")


def test_a_stripped_or_never_signed_file_has_none(settings: Settings, tmp_path: Path) -> None:
    plain = encode(frames(4), tmp_path)
    for data in plain.values():
        verdict = provenance.verify(data, anchors=signing.trust_anchors(settings))
        assert (verdict.status, verdict.fields) == ("none", {})
        assert "no C2PA manifest" in verdict.problem


def test_another_deployments_signature_is_valid_but_not_trusted(settings: Settings, tmp_path: Path) -> None:
    files, _ = stamped(settings, tmp_path, frames(1))
    elsewhere = Settings(data_dir=tmp_path / "elsewhere")
    signing.load(elsewhere)
    verdict = provenance.verify(files["image.png"], anchors=signing.trust_anchors(elsewhere))
    assert verdict.status == "untrusted"
    assert (
        verdict.problem
        == "signature valid, but the signer (Noor deployment signer, issued by Noor (Es256)) is not trusted here"
    )
    assert provenance.verify(files["image.png"], anchors=signing.trust_anchors(settings)).ok


def test_each_part_turns_off_per_deployment(tmp_path: Path) -> None:
    result = frames(4)
    plain = encode(result, tmp_path)
    off = Settings(data_dir=tmp_path / "off", provenance=False, watermark=False)
    assert Provenance.load(off).sign_files(plain, Manifest("tiny", "1", "created", "g")) == plain
    assert Provenance.load(off).mark(result, "g")[1] is None and not (tmp_path / "off").exists()
    unmarked = Settings(data_dir=tmp_path / "unmarked", watermark=False)
    files, _ = stamped(unmarked, tmp_path, result)
    verdict = provenance.verify(files["video.mp4"], anchors=signing.trust_anchors(unmarked))
    assert verdict.ok and verdict.fields["watermark_claimed"]["embedded"] is False
    assert watermark.read(provenance.frames_of(files["video.mp4"], "video/mp4")).status == "none"
    unsigned = Settings(data_dir=tmp_path / "unsigned", provenance=False)
    files, _ = stamped(unsigned, tmp_path, result)
    assert provenance.verify(files["video.mp4"]).status == "none"
    assert watermark.read(provenance.frames_of(files["video.mp4"], "video/mp4")).status == "found"


def test_frames_too_small_are_signed_unmarked(settings: Settings, tmp_path: Path) -> None:
    files, made = stamped(settings, tmp_path, frames(4, 128, 128))
    assert made.marked is None
    verdict = provenance.verify(files["video.mp4"], anchors=signing.trust_anchors(settings))
    assert verdict.ok and verdict.fields["watermark_claimed"]["embedded"] is False
    assert watermark.read(provenance.frames_of(files["video.mp4"], "video/mp4")).status == "too-small"


def test_bad_manifests_and_files_are_one_line_errors() -> None:
    with pytest.raises(ProvenanceError, match="action must be one of created, edited, reframed, upscaled, got 'drawn'"):
        Manifest("tiny", "1", "drawn", "g")  # type: ignore[arg-type]
    with pytest.raises(ProvenanceError, match="action 'edited' needs its source as one parentOf ingredient, got 0"):
        Manifest("tiny", "1", "edited", "g")
    with pytest.raises(ProvenanceError, match="not an MP4, PNG, JPEG or WebP file"):
        provenance.verify(b"%PDF-1.4 not a picture")
    with pytest.raises(ProvenanceError, match=r"cannot sign 'notes\.txt'"):
        provenance.mime_of("notes.txt")


def test_the_output_check_for_api_tests_passes_signed_files_and_fails_plain_ones(
    settings: Settings, tmp_path: Path
) -> None:
    files, _ = stamped(settings, tmp_path, frames(4))
    anchors = signing.trust_anchors(settings)
    assert {name: check_output(name, data, anchors) for name, data in files.items()} == {
        "video.mp4": "gen-0001",
        "thumbnail.jpg": "gen-0001",
    }
    with pytest.raises(AssertionError, match=r"video\.mp4: none: no C2PA manifest"):
        check_output("video.mp4", encode(frames(4), tmp_path)["video.mp4"], anchors)


def test_a_png_with_its_manifest_chunk_cut_out_has_none_but_keeps_its_mark(settings: Settings, tmp_path: Path) -> None:
    files, _ = stamped(settings, tmp_path, frames(1))
    data, kept, at = files["image.png"], [], 8
    while at < len(data):  # PNG chunks: length, type, data, CRC; C2PA's is `caBX`
        length = int.from_bytes(data[at : at + 4], "big")
        if data[at + 4 : at + 8] != b"caBX":
            kept.append(data[at : at + 12 + length])
        at += 12 + length
    stripped = data[:8] + b"".join(kept)
    assert len(stripped) < len(data)
    verdict = provenance.verify(stripped, anchors=signing.trust_anchors(settings))
    assert verdict.status == "none" and "stripped" in verdict.problem
    assert watermark.read(provenance.frames_of(stripped, "image/png")).mark is not None


def test_a_generation_drawn_with_concepts_names_them(settings: Settings, tmp_path: Path) -> None:
    files, _ = stamped(settings, tmp_path, frames(4), concepts=("crescent", "brand_logo"))
    verdict = provenance.verify(files["video.mp4"], anchors=signing.trust_anchors(settings))
    assert verdict.status == "trusted" and verdict.fields["concepts"] == ["crescent", "brand_logo"]
    (tmp_path / "plain").mkdir()
    plain, _ = stamped(settings, tmp_path / "plain", frames(4))
    assert "concepts" not in provenance.verify(plain["video.mp4"], anchors=signing.trust_anchors(settings)).fields
