"""The paper's claims, one module each. Every module registers one `Claim` (`cos.registry.register`) when
imported; `load_all()` imports them all, and the claims of other packages declared under the `cos.claims`
entry-point group (`[project.entry-points."cos.claims"] my_claim = "mypkg.my_claim"`)."""
from __future__ import annotations

import importlib
import pkgutil
from importlib import metadata

_loaded = False


def load_all() -> None:
    """Import every claim module once (modules whose name starts with `_` are helpers, not claims)."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for m in pkgutil.iter_modules(__path__):
        if not m.name.startswith("_"):
            importlib.import_module(f"{__name__}.{m.name}")
    for ep in metadata.entry_points(group="cos.claims"):
        ep.load()
