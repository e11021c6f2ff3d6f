"""`noor verify FILE`: what a file's C2PA manifest and its invisible watermark say, and whether they hold.

Exit 0: a manifest signed under a trusted CA whose hashes match; 1: no manifest, a tampered file, a bad
signature or an untrusted signer (one line on stderr says which); 2: not a file Noor could have written.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from noor.cli.base import BadInput, app


def _show(fields: dict[str, Any]) -> list[str]:
    said = fields.get("watermark_claimed") or {}
    embedded = said.get("embedded")
    claim = (
        f"embedded (deployment {said.get('deployment')}, generation tag {said.get('generation_tag')})"
        if embedded
        else f"none ({said.get('reason', 'not said')})"
    )
    source = str(fields.get("digital_source_type") or "-").rsplit("/", 1)[-1]
    rows = [
        ("generation", fields.get("generation_id", "-")),
        ("model", f"{fields.get('model', '-')} (version {fields.get('model_version', '-')})"),
        ("action", f"{fields.get('action', '-')} ({fields.get('c2pa_action') or '-'})"),
        ("source type", source),
        ("region", fields.get("region") or "-"),
        ("time", fields.get("created_at", "-")),
        ("ingredients", ", ".join(fields.get("ingredients", [])) or "-"),
        ("signer", fields.get("signer", "-")),
        ("made by", fields.get("claim_generator", "-")),
        ("watermark (manifest)", claim),
    ]
    return [f"  {name + ':':<22} {value}" for name, value in rows]


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="an MP4, PNG, JPEG or WebP file")],
    trust: Annotated[
        Path | None,
        typer.Option(help="a PEM file of CAs to trust besides this deployment's own and NOOR_SIGNING_TRUST"),
    ] = None,
) -> None:
    """Print what FILE's C2PA manifest and invisible watermark say; exit 1 when there is no manifest, it was
    tampered with, or its signer is not trusted."""
    from noor.config import settings
    from noor.trust import provenance, signing, watermark

    # 1. the file and the CAs to trust
    try:
        data = provenance.read_file(file)
        mime = provenance.sniff(data)
        if mime is None:
            raise BadInput(f"FILE: {str(file)!r} is not an MP4, PNG, JPEG or WebP file")
        anchors = signing.trust_anchors(settings()) + (provenance.read_file(trust) if trust else b"")
        here = signing.local_deployment_id(settings())
    except (provenance.ProvenanceError, signing.SigningError) as err:
        raise BadInput(f"FILE: {err}" if "NOOR_" not in str(err) else str(err)) from None
    # 2. the manifest
    verdict = provenance.verify(data, mime, anchors=anchors)
    print(f"{file}  ({mime})")
    labels = {"trusted": "signed, trusted", "untrusted": "signed, signer not trusted", "invalid": "INVALID"}
    print(f"manifest: {labels.get(verdict.status, 'none')}" + (f" - {verdict.problem}" if verdict.problem else ""))
    if verdict.fields:
        print("\n".join(_show(verdict.fields)))
    # 3. the watermark, read from the pixels (a vote over every frame of a video)
    try:
        reading = watermark.read(provenance.frames_of(data, mime))
    except provenance.ProvenanceError as err:
        print(f"watermark: unreadable ({err})")
    else:
        line = f"watermark: {reading.describe()}"
        mark = reading.mark
        if mark is not None and here is not None:
            line += "; this deployment's mark" if mark.deployment == here else "; another deployment's mark"
        if mark is not None and verdict.fields.get("generation_id"):
            tag = watermark.generation_tag(verdict.fields["generation_id"])
            line += (
                "; matches the manifest's generation" if tag == mark.generation else "; NOT the manifest's generation"
            )
        print(line)
    if not verdict.ok:
        print(f"noor: {file}: {verdict.problem}", file=sys.stderr)
        raise typer.Exit(1)
