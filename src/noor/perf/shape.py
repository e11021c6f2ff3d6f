"""What one request asks for: its size in pixels, frames and steps."""

from __future__ import annotations

from dataclasses import dataclass

from noor.catalog import ModelArch


class PerfError(ValueError):
    """A request or plan the perf model cannot price; names the field and the bad value."""

    def __init__(self, field_name: str, value: object, message: str):
        self.field = field_name
        self.value = value
        super().__init__(f"{field_name}: {message}, got {value!r}")


@dataclass(frozen=True)
class Shape:
    width: int
    height: int
    num_frames: int = 1
    steps: int | None = None  # None: the model's default
    batch: int = 1  # requests run together in one call (images or videos)

    def __post_init__(self) -> None:
        for name in ("width", "height", "num_frames", "batch"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise PerfError(name, value, "must be a positive integer")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise PerfError("steps", self.steps, "must be a positive integer")

    @classmethod
    def default(cls, model: ModelArch) -> Shape:
        return cls(model.default_width, model.default_height, model.default_frames, model.default_steps)

    def for_model(self, model: ModelArch) -> Shape:
        """The shape the model really computes: its default steps, and its native size if it always draws that."""
        steps = self.steps or model.default_steps
        if model.renders_native:
            frames = 1 if self.num_frames == 1 else model.default_frames
            return Shape(model.default_width, model.default_height, frames, steps, self.batch)
        return Shape(self.width, self.height, self.num_frames, steps, self.batch)
