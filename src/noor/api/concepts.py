"""Dream Machine's concepts (`concepts: [{"key": ...}]`) as trained concepts: adapters registered with
`noor concepts add` (noor.engine.concepts), each acting on one installed model.

A request's keys are checked here, when it is created: an unknown key is a 400 listing the installed keys and
the models they act on, and a concept of another model than the request's is a 400 naming that model. The job
keeps the keys; the worker resolves them to adapter folders when it runs (a concept removed in between fails the
job with the reason, its credits back). `GET /generations/concepts/list` lists the installed keys.

Luma's keys are camera moves (`dolly_zoom`, `orbit_left`, ...). Noor has no built-in camera moves: a move is a
concept like any other, trained on clips of it and registered under Luma's key, so a request written for Luma
runs unchanged. The legacy camera-motion phrases (`GET /generations/camera_motion/list`) are the installed
concepts whose key is one of Luma's moves, in prompt words (`orbit_left` -> `camera orbit left`).
"""

from __future__ import annotations

from noor.engine import concepts as registered
from noor.engine import registry

# Luma's concept keys (docs/reference/luma-api.md §4.3): the camera moves a legacy phrase may name.
CAMERA_MOVES = frozenset(
    [
        "truck_left",
        "pan_right",
        "pedestal_down",
        "low_angle",
        "pedestal_up",
        "selfie",
        "pan_left",
        "roll_right",
        "zoom_in",
        "over_the_shoulder",
        "orbit_right",
        "orbit_left",
        "static",
        "tiny_planet",
        "high_angle",
        "bolt_cam",
        "dolly_zoom",
        "overhead",
        "zoom_out",
        "handheld",
        "roll_left",
        "pov",
        "aerial_drone",
        "push_in",
        "crane_down",
        "truck_right",
        "tilt_down",
        "elevator_doors",
        "tilt_up",
        "ground_level",
        "pull_out",
        "aerial",
        "crane_up",
        "eye_level",
    ]
)


def installed() -> dict[str, list[str]]:
    """Installed concept key -> the models it acts on (one each: an adapter is trained for one model)."""
    return {key: [c.model] for key, c in registered.installed().items()}


def camera_motion(key: str) -> str:
    """A concept key as the legacy prompt phrase (`orbit_left` -> `camera orbit left`)."""
    return "camera " + key.replace("_", " ")


def camera_motions() -> list[str]:
    """The legacy phrases of the installed concepts that are Luma camera moves."""
    return [camera_motion(key) for key in installed() if key in CAMERA_MOVES]


def refusal(keys: list[str], spec: registry.ModelSpec) -> str | None:
    """Why `spec` cannot take these concept keys, or None when every one is installed for it."""
    known = registered.installed()
    for key in keys:
        if key not in known:
            listed = ", ".join(f"{k} ({c.model})" for k, c in known.items())
            if not listed:
                return (
                    f"concepts: {key!r} is not available: no concepts are installed on this server "
                    "(noor concepts add registers one; see GET /generations/concepts/list)"
                )
            return f"concepts: unknown concept {key!r}; installed concepts and the models they act on: {listed}"
        if known[key].model != spec.id:
            return (
                f"concepts: {key!r} acts on model {known[key].model!r}, not on {spec.id!r} (the request's model); "
                f"send it with model {known[key].model!r}"
            )
    if len(set(keys)) != len(keys):
        return f"concepts: a concept may be given once, got {keys}"
    return None
