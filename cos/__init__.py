"""cos: the Chain-of-Steps claims harness (the findings of *Demystifying Video Reasoning* as executable claims).

The names in `__all__` are the declared API: what a claim author (a module of `cos/claims/` or of a package
under the `cos.claims` entry-point group) and a library user may rely on across minor versions. Everything
else in the package is private and may change without notice. The names resolve lazily, so `import cos`
(and `cos --version`) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

# name -> module that defines it; one table, so the test that every name exists reads the same list
_API: dict[str, str] = {
    # writing a claim: its spec, typed details, controls, the row it returns
    "Claim": "cos.registry", "ClaimSpec": "cos.registry", "Details": "cos.registry", "Control": "cos.registry",
    "ClaimResult": "cos.registry", "register": "cos.registry", "also_requires": "cos.registry",
    "decide": "cos.registry", "all_claims": "cos.registry", "get_claim": "cos.registry",
    # what `measure_batch` receives and reads out
    "RunContext": "cos.runner", "ClaimSettings": "cos.settings", "TaskInstance": "cos.tasks",
    "clean_rows": "cos.readouts", "clean_batch_rows": "cos.readouts", "final_scores": "cos.readouts",
    "weights_per_step": "cos.readouts",
    "commit_step": "cos.readouts", "shows_answer": "cos.readouts",
    # intervals (every status is decided on one of these)
    "Estimate": "cos.stats", "bootstrap_ci": "cos.stats", "paired_difference_ci": "cos.stats",
    "proportion_ci": "cos.stats", "share_ci": "cos.stats", "interval": "cos.stats", "argmax_ci": "cos.stats",
    "in_window": "cos.stats", "spearman_ci": "cos.stats",
    # models with a known outcome, for a claim's controls
    "ref": "cos.controls", "scripted": "cos.controls", "random_organism": "cos.controls",
    "TINY": "cos.controls", "SMALL": "cos.controls",
    # using cos as a library
    "WanSystem": "cos.models", "load_system": "cos.models", "run_claims": "cos.cli",
    "write_report": "cos.report", "write_comparison": "cos.report", "load_status": "cos.reporting",
    "CosError": "cos.errors", "InputError": "cos.errors",
}
__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    """Resolve an API name on first use (PEP 562): torch and matplotlib load only when needed."""
    mod = _API.get(name)
    if mod is None:
        raise AttributeError(f"module 'cos' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
