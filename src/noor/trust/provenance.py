"""Provenance on every output: a signed C2PA manifest (c2pa-python) in each MP4, PNG, JPEG and WebP Noor writes,
and the invisible watermark (watermark.py) in its pixels.

What a manifest says (docs/trust.md): the `c2pa.actions.v2` assertion with the action (`c2pa.created`; an edit,
a reframe and an upscale open their source as the `parentOf` ingredient, then `c2pa.edited` or `c2pa.resized`),
the IPTC digital source type `trainedAlgorithmicMedia`, the model and its version as the software agent, and
the time; the ingredients (the source generation or uploaded image, and keyframes as `inputTo`), each with its
own manifest when it has one, so a chain of edits reads back to the first generation; and Noor's own
`org.noor.generation` assertion: generation id, model, version, region, action, time, the trained concepts it was
drawn with (when any) and what the watermark in this file says (or why there is none).

A worker wires it in two places (docs/trust.md, "Wiring"): `Provenance.mark` on the result's frames before they
are encoded, `Provenance.sign_files` on the encoded files. Both are no-ops when the deployment turned them off
(NOOR_WATERMARK, NOOR_PROVENANCE): per deployment, never per request.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from noor.trust import signing, watermark

if TYPE_CHECKING:
    from noor.config import Settings

Action = Literal["created", "edited", "reframed", "upscaled"]
# action -> (C2PA action, description); an edit, reframe and upscale first open their source (c2pa.opened)
ACTIONS: dict[str, tuple[str, str]] = {
    "created": ("c2pa.created", "generated from a prompt"),
    "edited": ("c2pa.edited", "regenerated from a source clip or image"),
    "reframed": ("c2pa.edited", "reframed: the source placed on a new canvas and the rest generated"),
    "upscaled": ("c2pa.resized", "upscaled by a model"),
}
TRAINED_ALGORITHMIC_MEDIA = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
ASSERTION = "org.noor.generation"
MIME_TYPES = {
    ".mp4": "video/mp4",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".webp": "image/webp",
}

# What a validation failure code means, in words (C2PA 2.1, "Validation"); others are shown as the SDK says them.
FAILURES = {
    "assertion.dataHash.mismatch": "tampered: the media's bytes changed after it was signed",
    "assertion.bmffHash.mismatch": "tampered: the video's bytes changed after it was signed",
    "assertion.hashedURI.mismatch": "tampered: an assertion of the manifest changed after it was signed",
    "claimSignature.mismatch": "tampered: the manifest's signature does not match its claim",
    "claimSignature.outsideValidity": "the signing certificate was not valid when the file was signed",
    # without a timestamp authority's countersignature (Noor signs offline) the signer is checked at read time
    "signingCredential.expired": "the signing certificate has expired (the file carries no trusted timestamp)",
    "signingCredential.revoked": "the signing certificate is revoked",
    "signingCredential.invalid": "the signing certificate is not one C2PA accepts",
}


class ProvenanceError(ValueError):
    """A file or manifest request provenance cannot handle: one line naming what is wrong."""


@dataclass(frozen=True)
class Ingredient:
    """A file an output was made from: the source generation or upload (`parentOf`) or a keyframe (`inputTo`)."""

    title: str  # e.g. "generation 3f2a.../video.mp4" or "upload cat.png"
    data: bytes
    mime: str
    relationship: Literal["parentOf", "inputTo"] = "parentOf"


@dataclass(frozen=True)
class Marked:
    """The watermark a result's frames got, and their size (a file of another size, such as a thumbnail, is a
    resampled copy that does not carry it)."""

    mark: watermark.Mark
    width: int
    height: int


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Manifest:
    """What one generation's files say about it (one Manifest signs all of them, each under its own title)."""

    model: str
    model_version: str
    action: Action
    generation_id: str
    region: str | None = None
    created_at: dt.datetime = field(default_factory=_now)
    ingredients: tuple[Ingredient, ...] = ()
    marked: Marked | None = None  # what the pixels carry (Provenance.mark); None: not marked
    concepts: tuple[str, ...] = ()  # the trained concepts (adapter keys, `noor concepts`) it was drawn with

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ProvenanceError(f"action must be one of {', '.join(ACTIONS)}, got {self.action!r}")
        parents = [i for i in self.ingredients if i.relationship == "parentOf"]
        if self.action != "created" and len(parents) != 1:
            raise ProvenanceError(
                f"action {self.action!r} needs its source as one parentOf ingredient, got {len(parents)}"
            )
        if self.action == "created" and parents:
            raise ProvenanceError("action 'created' has no parentOf ingredient (keyframes are inputTo)")

    def definition(self, title: str, watermark_note: dict[str, Any]) -> dict[str, Any]:
        """The c2pa Builder's manifest definition for one file."""
        import noor

        when = self.created_at.isoformat()
        agent = {"name": self.model, "version": self.model_version}
        c2pa_action, description = ACTIONS[self.action]
        labels = [f"ingredient-{k}" for k in range(len(self.ingredients))]
        inputs = [label for label, i in zip(labels, self.ingredients, strict=True) if i.relationship == "inputTo"]
        main: dict[str, Any] = {
            "action": c2pa_action,
            "digitalSourceType": TRAINED_ALGORITHMIC_MEDIA,
            "softwareAgent": agent,
            "when": when,
            "description": description,
        }
        actions = [main]
        if self.action != "created":
            parent = next(
                label for label, i in zip(labels, self.ingredients, strict=True) if i.relationship == "parentOf"
            )
            actions.insert(0, {"action": "c2pa.opened", "when": when, "parameters": {"ingredientIds": [parent]}})
        if inputs:
            main["parameters"] = {"ingredientIds": inputs}
        generation: dict[str, Any] = {
            "generation_id": self.generation_id,
            "model": self.model,
            "model_version": self.model_version,
            "region": self.region,
            "action": self.action,
            "created_at": when,
            "ingredients": [{"title": i.title, "relationship": i.relationship} for i in self.ingredients],
            "watermark": watermark_note,
        }
        if self.concepts:
            generation["concepts"] = list(self.concepts)
        return {
            "claim_generator_info": [{"name": "Noor", "version": noor.__version__}],
            "title": title,
            "assertions": [
                {"label": "c2pa.actions.v2", "data": {"actions": actions}},
                {"label": ASSERTION, "data": generation},
            ],
        }


def mime_of(name: str) -> str:
    suffix = PurePath(name).suffix.lower()
    if suffix not in MIME_TYPES:
        raise ProvenanceError(f"cannot sign {name!r}: provenance covers {', '.join(MIME_TYPES)} files")
    return MIME_TYPES[suffix]


def sniff(data: bytes) -> str | None:
    """The media type of a file from its first bytes; None when it is none of the kinds Noor writes."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[4:8] == b"ftyp":
        return "video/mp4"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def pixel_size(data: bytes, mime: str) -> tuple[int, int]:
    """(width, height) from the file's header, without decoding its pictures."""
    if mime == "video/mp4":
        import av

        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            return stream.codec_context.width, stream.codec_context.height
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        return image.size


def frames_of(data: bytes, mime: str) -> np.ndarray:
    """Every picture of a file as (T, H, W, 3) uint8, to read its watermark."""
    try:
        if mime == "video/mp4":
            import av

            with av.open(io.BytesIO(data)) as container:
                frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            if not frames:
                raise ProvenanceError("the video has no frames")
            return np.stack(frames)
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            return np.asarray(image.convert("RGB"))[None]
    except ProvenanceError:
        raise
    except Exception as err:  # av's and Pillow's many decode errors: the pictures are unreadable, say so
        raise ProvenanceError(f"cannot decode the pictures of this {mime} file: {err}") from None


def _context(settings_dict: dict[str, Any]) -> Any:
    import c2pa

    return c2pa.Context(c2pa.Settings.from_dict(settings_dict))


# No thumbnail in the manifest (the file is its own picture, and making one would decode a video); no network
# (OCSP fetching is off by default; no timestamp authority).
_BUILDER_SETTINGS = {"builder": {"thumbnail": {"enabled": False}}}


def sign(
    data: bytes,
    mime: str,
    definition: Mapping[str, Any],
    credentials: signing.Credentials,
    ingredients: Sequence[Ingredient] = (),
) -> bytes:
    """The file with a C2PA manifest made from `definition` (Manifest.definition), signed by `credentials`."""
    import c2pa

    try:
        signer = c2pa.Signer.from_info(
            c2pa.C2paSignerInfo(credentials.alg, credentials.chain_pem, credentials.key_pem, None)
        )
        with c2pa.Builder(dict(definition), context=_context(_BUILDER_SETTINGS)) as builder:
            for k, ingredient in enumerate(ingredients):
                about = {"title": ingredient.title, "relationship": ingredient.relationship, "label": f"ingredient-{k}"}
                builder.add_ingredient(about, ingredient.mime, io.BytesIO(ingredient.data))
            out = io.BytesIO()
            builder.sign(signer, mime, io.BytesIO(data), out)
    except c2pa.C2paError as err:
        raise ProvenanceError(f"cannot sign with {credentials.source}: {_one_line(err)}") from None
    return out.getvalue()


def _one_line(err: Exception) -> str:
    return " ".join(str(err).split())


@dataclass(frozen=True)
class Verdict:
    """What a file's manifest says and whether it holds: trusted (valid, signed under a trusted CA), untrusted
    (valid, but its signer is not one this deployment trusts), invalid (tampered, or a bad signature or
    certificate), none (no manifest)."""

    status: Literal["trusted", "untrusted", "invalid", "none"]
    problem: str = ""  # one line: what is wrong; empty when trusted
    fields: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] | None = None  # the active manifest as the SDK reads it

    @property
    def ok(self) -> bool:
        return self.status == "trusted"


def verify(data: bytes, mime: str | None = None, *, anchors: bytes = b"") -> Verdict:
    """Read and check the manifest of a file's bytes against the trust anchors (PEM; signing.trust_anchors)."""
    import c2pa

    mime = mime or sniff(data)
    if mime is None:
        raise ProvenanceError("not an MP4, PNG, JPEG or WebP file")
    settings: dict[str, Any] = {"verify": {"verify_trust": bool(anchors)}}
    if anchors:
        settings["trust"] = {"trust_anchors": anchors.decode()}
    try:
        reader = c2pa.Reader.try_create(mime, io.BytesIO(data), None, _context(settings))
        if reader is None:
            return Verdict("none", "no C2PA manifest (never signed, or its manifest was stripped)")
        with reader:
            store = json.loads(reader.json())
            state = reader.get_validation_state()
    except c2pa.C2paError as err:  # a manifest that does not parse: its bytes were changed
        return Verdict("invalid", f"tampered: the manifest cannot be read ({_one_line(err)})")
    manifest = store.get("manifests", {}).get(store.get("active_manifest"), {})
    fields = _fields(manifest)
    failures = [s for s in store.get("validation_status", []) if s.get("code") != "signingCredential.untrusted"]
    if failures or state == "Invalid":
        code = failures[0]["code"] if failures else "unknown"
        said = FAILURES.get(code, f"{code}: {failures[0].get('explanation', '')}" if failures else "invalid")
        return Verdict("invalid", f"{said} ({code})" if code in FAILURES else said, fields, manifest)
    if state != "Trusted":
        signer = fields.get("signer", "?")
        return Verdict("untrusted", f"signature valid, but the signer ({signer}) is not trusted here", fields, manifest)
    return Verdict("trusted", "", fields, manifest)


def _fields(manifest: Mapping[str, Any]) -> dict[str, Any]:
    """The manifest's facts that `noor verify` prints, flat."""
    out: dict[str, Any] = {}
    assertions = {a.get("label"): a.get("data", {}) for a in manifest.get("assertions", [])}
    noor = assertions.get(ASSERTION, {})
    actions = assertions.get("c2pa.actions.v2", assertions.get("c2pa.actions", {})).get("actions", [])
    made = next((a for a in actions if a.get("digitalSourceType")), actions[0] if actions else {})
    for key in ("generation_id", "model", "model_version", "region", "action", "created_at", "concepts"):
        if key in noor:
            out[key] = noor[key]
    out["c2pa_action"] = made.get("action")
    out["digital_source_type"] = made.get("digitalSourceType")
    out["ingredients"] = [f"{i.get('title')} ({i.get('relationship')})" for i in manifest.get("ingredients", [])]
    info = manifest.get("signature_info", {})
    out["signer"] = f"{info.get('common_name', '?')}, issued by {info.get('issuer', '?')} ({info.get('alg', '?')})"
    generator = manifest.get("claim_generator_info", [{}])[0]
    out["claim_generator"] = f"{generator.get('name', '?')} {generator.get('version', '')}".strip()
    if "watermark" in noor:
        out["watermark_claimed"] = noor["watermark"]
    return out


@dataclass(frozen=True)
class Provenance:
    """A deployment's provenance: its signing credentials (None: NOOR_PROVENANCE=off) and whether it marks
    pixels. Loaded once (a worker holds one); `load` fails with one line when the credentials cannot sign."""

    credentials: signing.Credentials | None
    watermark: bool
    deployment_id: str

    @classmethod
    def load(cls, settings: Settings) -> Provenance:
        if not settings.provenance and not settings.watermark:
            return cls(None, False, "")
        credentials = signing.load(settings)  # the watermark's deployment id comes from them too
        return cls(credentials if settings.provenance else None, settings.watermark, credentials.deployment_id)

    def mark(self, frames: np.ndarray, generation_id: str) -> tuple[np.ndarray, Marked | None]:
        """A result's frames ((T, H, W, 3) uint8) with the watermark, before they are encoded, and what they
        carry (for Manifest.marked); unchanged and None when the deployment does not mark pixels or the frames
        are too small to carry a mark."""
        H, W = frames.shape[-3:-1]
        if not self.watermark or not watermark.large_enough(W, H):
            return frames, None
        mark = watermark.Mark.of(self.deployment_id, generation_id)
        return watermark.watermark_frames(frames, mark), Marked(mark, W, H)

    def sign_files(self, files: Mapping[str, bytes], manifest: Manifest) -> dict[str, bytes]:
        """Each MP4, PNG, JPEG and WebP in `files` (name -> bytes) with its signed manifest; other files as they
        are. Unchanged when NOOR_PROVENANCE is off."""
        if self.credentials is None:
            return dict(files)
        out: dict[str, bytes] = {}
        for name, data in files.items():
            suffix = PurePath(name).suffix.lower()
            if suffix not in MIME_TYPES:
                out[name] = data
                continue
            mime = MIME_TYPES[suffix]
            note = self._watermark_note(data, mime, manifest.marked)
            out[name] = sign(
                data, mime, manifest.definition(PurePath(name).name, note), self.credentials, manifest.ingredients
            )
        return out

    @staticmethod
    def _watermark_note(data: bytes, mime: str, marked: Marked | None) -> dict[str, Any]:
        """What the manifest says about this file's watermark: what it carries, or why nothing."""
        if marked is None:
            return {"embedded": False, "reason": "not marked (NOOR_WATERMARK is off, or the frames were too small)"}
        width, height = pixel_size(data, mime)
        if (width, height) != (marked.width, marked.height):
            why = f"a {width}x{height} copy of the {marked.width}x{marked.height} marked frames (a thumbnail)"
            return {"embedded": False, "reason": f"{why} does not carry their mark"}
        return {
            "embedded": True,
            "method": "invisible-watermark dwtDctSvd (U plane, scale 36, 64 bits)",
            "deployment": marked.mark.deployment,
            "generation_tag": marked.mark.generation,
        }


def read_file(path: str | Path) -> bytes:
    """A file's bytes, or ProvenanceError naming the path."""
    try:
        return Path(path).read_bytes()
    except OSError as err:
        raise ProvenanceError(f"cannot read {str(path)!r}: {err.strerror or err}") from None
