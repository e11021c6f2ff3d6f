"""The check the API tests can run on every output file once the worker signs and marks them (docs/trust.md,
"Wiring"): a trusted C2PA manifest that c2pa-python's own reader accepts, and the watermark still read after a
re-encode at the worker's own settings (H.264 crf 18 for a clip, the same format and quality for an image)."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import c2pa

from noor.engine import media
from noor.trust import provenance, watermark


def check_output(name: str, data: bytes, anchors: bytes) -> str:
    """Assert that one output file carries its provenance; returns its generation id (from the manifest)."""
    mime = provenance.mime_of(name)
    # 1. the manifest, by Noor's verify and by c2pa-python's Reader with the deployment's CA as trust anchor
    verdict = provenance.verify(data, mime, anchors=anchors)
    assert verdict.ok, f"{name}: {verdict.status}: {verdict.problem}"
    context = c2pa.Context(c2pa.Settings.from_dict({"trust": {"trust_anchors": anchors.decode()}}))
    with c2pa.Reader(mime, io.BytesIO(data), context=context) as reader:
        assert reader.get_validation_state() == "Trusted", f"{name}: {reader.get_validation_results()}"
    # 2. the watermark after a re-encode at the worker's settings, where the manifest says the file carries one
    claimed = verdict.fields["watermark_claimed"]
    if claimed["embedded"]:
        frames = provenance.frames_of(data, mime)
        with tempfile.TemporaryDirectory() as tmp:
            again = Path(tmp) / f"again{Path(name).suffix}"
            if mime == "video/mp4":
                media.write_video(again, frames, 8)
            else:
                media.write_image(again, frames[0])
            reading = watermark.read(provenance.frames_of(again.read_bytes(), mime))
        expected = watermark.Mark(claimed["deployment"], claimed["generation_tag"])
        assert reading.mark == expected, f"{name}: after a re-encode the watermark reads {reading.describe()}"
    return str(verdict.fields["generation_id"])
