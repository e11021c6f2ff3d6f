"""The one error the catalog raises: an id it does not know, with the ids it does."""

from __future__ import annotations

from collections.abc import Iterable


class UnknownId(KeyError):
    def __init__(self, kind: str, value: str, valid: Iterable[str]):
        self.kind = kind
        self.value = value
        self.valid = sorted(valid)
        super().__init__(f"unknown {kind} {value!r}; valid: {', '.join(self.valid)}")

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])
