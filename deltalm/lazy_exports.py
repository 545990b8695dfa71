"""Lazy package exports: a package's public names are imported from their modules on first access (PEP 562),
so that importing the package stays light (no torch until a name that needs it is used)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str], namespace: dict[str, Any]) -> Callable[[str], Any]:
    """The module-level ``__getattr__`` of ``package``: ``exports`` maps each public name to the module that
    defines it (``{"DeltaLM": "deltalm.model.model"}``). The first access imports that module and caches the
    value in ``namespace`` (the package's ``globals()``), so later accesses are plain attribute lookups.

    Raises AttributeError for a name not in ``exports``, worded as Python's own.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    return __getattr__
