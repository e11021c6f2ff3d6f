"""The one error the planner raises: an input it cannot plan with, naming the field and the bad value."""

from __future__ import annotations


class PlanError(ValueError):
    """Bad planning input. `field` is the input's name (`power_mw`, `mix.classes[1].share`, `pue`...)."""

    def __init__(self, field_name: str, value: object, message: str):
        self.field = field_name
        self.value = value
        self.message = message
        super().__init__(f"{field_name}: {message}, got {value!r}")
