"""Settings given as dicts (optimizer, scheduler, head, loss, inference): defaults filled, unknown keys refused."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def merge_config(given: Mapping[str, Any] | None, defaults: Mapping[str, Any], what: str) -> dict[str, Any]:
    """``defaults`` updated with ``given``; unknown keys are an error naming the valid ones."""
    given = dict(given or {})
    unknown = set(given) - set(defaults)
    if unknown:
        raise ValueError(f"Unknown {what} key(s) {sorted(unknown)}; valid keys are {sorted(defaults)}.")
    return {**defaults, **given}
