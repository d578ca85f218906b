"""Lazy re-exports for package ``__init__`` modules (PEP 562).

A package lists the names it re-exports and the module each lives in; a name is imported on
first use. This keeps ``import uinfo_fast`` and the log-reading parts (``uinfo-fast plot``) free of
the compiled extension, which only the probe engine needs.
"""
from __future__ import annotations

from importlib import import_module


def lazy_exports(package: str, exports: dict[str, tuple[str, ...]]):
    """(``__getattr__``, ``__dir__``, ``__all__``) for ``package``: ``exports`` maps a module,
    relative to ``package`` (e.g. ``".engine"``), to the public names it defines: the one list
    of the package's exports."""
    namespace = import_module(package).__dict__
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(where[name], package), name)
        namespace[name] = value  # later lookups skip __getattr__
        return value

    def __dir__():
        return sorted(set(namespace) | set(where))

    return __getattr__, __dir__, sorted(where)
