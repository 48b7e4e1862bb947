"""A name -> class registry of DataModules, filled by the ``@register_datamodule`` decorator."""

from __future__ import annotations

from typing import TypeVar

T = TypeVar("T", bound=type)

_DATAMODULES: dict[str, type] = {}


def register_datamodule(cls: T) -> T:
    """Register a DataModule class under its class name (use as a decorator)."""
    _DATAMODULES[cls.__name__] = cls
    return cls


def list_datamodules() -> list[str]:
    """Return the sorted names of all registered DataModules."""
    return sorted(_DATAMODULES)


def get_datamodule(name: str) -> type:
    """Return the DataModule class registered as ``name``.

    Raises:
        KeyError: No DataModule is registered under ``name``; the message lists the known names.
    """
    try:
        return _DATAMODULES[name]
    except KeyError:
        raise KeyError(f"Unknown DataModule {name!r}. Known DataModules: {', '.join(list_datamodules())}.") from None
