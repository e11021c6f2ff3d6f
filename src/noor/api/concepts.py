"""Concepts (Dream Machine's named camera moves, `concepts: [{"key": "dolly_zoom"}]`) and the legacy camera-motion
phrases: which installed model acts on which.

A model acts on a concept when its spec declares the capability `concept:<key>`. No model does today:
noor-tiny and the diffusers families take no concept, and the engine's Task has no field to carry one, so
the lists are empty and any concept in a request is refused with a 400 that says so. A model that learns
concepts declares them in its spec and takes them in its task; the lists, the check and the docs follow.
"""

from __future__ import annotations

from collections.abc import Iterable

from noor.engine import registry

CAPABILITY_PREFIX = "concept:"


def by_concept(specs: Iterable[registry.ModelSpec]) -> dict[str, list[str]]:
    """Concept key -> the ids of the models that act on it, for these specs."""
    found: dict[str, list[str]] = {}
    for spec in specs:
        for capability in sorted(spec.capabilities):
            if capability.startswith(CAPABILITY_PREFIX):
                found.setdefault(capability.removeprefix(CAPABILITY_PREFIX), []).append(spec.id)
    return dict(sorted(found.items()))


def installed() -> dict[str, list[str]]:
    """Concepts the installed models act on -> those models."""
    return by_concept(registry.available())


def camera_motion(key: str) -> str:
    """A concept key as the legacy prompt phrase (`orbit_left` -> `camera orbit left`)."""
    return "camera " + key.replace("_", " ")


def refusal(keys: list[str], spec: registry.ModelSpec) -> str | None:
    """Why `spec` cannot take these concept keys, or None when it acts on all of them."""
    own = set(by_concept([spec]))
    unknown = [k for k in keys if k not in own]
    if not unknown:
        return None
    everywhere = installed()
    if not everywhere:
        return (
            f"concepts: {unknown[0]!r} is not available: no concepts are installed on this server "
            "(no installed model acts on concepts; see GET /generations/concepts/list)"
        )
    elsewhere = ", ".join(f"{k} ({', '.join(models)})" for k, models in everywhere.items())
    return (
        f"concepts: model {spec.id!r} does not act on {unknown[0]!r}; "
        f"installed concepts and the models that act on them: {elsewhere}"
    )
