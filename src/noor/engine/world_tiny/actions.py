"""The player's actions: what each one does, and the ways actions are written down.

Shared by the terrain (a rollout walks them), the readers (a shift implies one), and later the model,
`noor world run --actions "right:8,up:8"` and a session's `{"action": "right"}` messages.
"""

from __future__ import annotations

import numpy as np

STEP_PX = 4  # map pixels the player moves per action

# Map pixels the player moves per action (dx, dy); y grows downwards as in an image.
MOVES: dict[str, tuple[int, int]] = {
    "none": (0, 0),
    "up": (0, -STEP_PX),
    "down": (0, STEP_PX),
    "left": (-STEP_PX, 0),
    "right": (STEP_PX, 0),
}
ACTIONS = tuple(MOVES)
MAX_REPEAT = 10_000  # the most steps one "action:count" may ask for


def check_actions(actions: list[str] | tuple[str, ...]) -> list[str]:
    """The actions as a list, or a ValueError naming the first unknown one."""
    for action in actions:
        if action not in MOVES:
            raise ValueError(f"action must be one of {', '.join(ACTIONS)}, got {action!r}")
    return list(actions)


def parse_actions(text: str) -> list[str]:
    """Actions written as "right:8,up:8,left:8,down:8" (a count after the colon, 1 without one)."""
    actions: list[str] = []
    for part in text.split(","):
        name, _, count = part.strip().partition(":")
        if not name:
            raise ValueError(f"actions must be ACTION[:COUNT] separated by commas, got {text!r}")
        if count and not (count.strip().isdigit() and 1 <= int(count) <= MAX_REPEAT):
            raise ValueError(f"an action's count must be a whole number in 1..{MAX_REPEAT}, got {count!r} in {part!r}")
        actions += check_actions([name.strip().lower()]) * (int(count) if count else 1)
    return actions


def closed_path(n: int) -> list[str]:
    """right n, up n, left n, down n: a loop that ends where it began (the revisit test)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    return ["right"] * n + ["up"] * n + ["left"] * n + ["down"] * n


def random_actions(rng: np.random.Generator, n: int) -> list[str]:
    """n actions drawn uniformly (a random walk: long-rollout tests and training data)."""
    return [ACTIONS[i] for i in rng.integers(0, len(ACTIONS), size=n)]
