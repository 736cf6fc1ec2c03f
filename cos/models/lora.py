"""LoRA stacking on both experts (App. C's 4-step model: reasoning LoRA + distillation LoRA at 0.5 each; or a
VBVR LoRA on base Wan2.2). diffusers' Wan LoRA loader does the format conversion and peft the adapters.

A LoRA that changes nothing (no LoRA matrices, every B·A product zero, or a weight of 0) is refused with one
line: it would be reported as "base+LoRA" under a new identity with the base model's numbers."""
from __future__ import annotations

from pathlib import Path

import torch

from cos.errors import ModelLoadError
from cos.models.files import check_safetensors

DEFAULT_WEIGHT = 0.5


def parse_lora_spec(spec: str) -> tuple[Path, float]:
    """"path[:weight]" → (path, weight); the weight defaults to 0.5 (the paper's App. C stack)."""
    head, sep, tail = spec.rpartition(":")
    if sep:
        try:
            return Path(head), float(tail)
        except ValueError:
            pass
    return Path(spec), DEFAULT_WEIGHT


def _lora_file(path: Path) -> Path:
    if not path.exists():
        raise ModelLoadError(f"{path}: LoRA path does not exist")
    if path.is_dir():
        files = sorted(path.glob("*.safetensors"))
        if len(files) != 1:
            raise ModelLoadError(f"{path}: a LoRA directory must hold exactly one .safetensors file, found {len(files)}")
        path = files[0]
    check_safetensors(path)
    return path


def _check_fits(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path, which: str) -> None:
    """Every LoRA matrix must name a Linear of the model with matching features (else: another architecture)."""
    modules = dict(model.named_modules())
    for key, t in state.items():
        if ".lora_A." not in key and ".lora_B." not in key:
            continue
        name = key.removeprefix("transformer.").split(".lora_")[0]
        mod = modules.get(name)
        if not isinstance(mod, torch.nn.Linear):
            raise ModelLoadError(f"{path}: LoRA targets {name!r}, which is not a Linear layer of {which} "
                                 "(a LoRA for another architecture?)")
        if ".lora_A." in key and t.shape[1] != mod.in_features:
            raise ModelLoadError(f"{path}: LoRA {name!r} expects {t.shape[1]} input features, {which} has "
                                 f"{mod.in_features} (a LoRA for another model size?)")
        if ".lora_B." in key and t.shape[0] != mod.out_features:
            raise ModelLoadError(f"{path}: LoRA {name!r} has {t.shape[0]} outputs, {which} has {mod.out_features}")


def check_changes_something(sd: dict[str, torch.Tensor], path: Path, weight: float) -> int:
    """How many modules the LoRA changes (a nonzero B·A, or a nonzero bias delta); ModelLoadError when none."""
    if weight == 0:
        raise ModelLoadError(f"{path}: LoRA weight 0 changes nothing; drop the LoRA or give a nonzero weight")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for k, t in sd.items():
        for part in ("lora_A", "lora_B"):
            if f".{part}.weight" in k:
                pairs.setdefault(k.split(f".{part}.")[0], {})[part] = t
    changed = 0
    for name, ab in pairs.items():
        a, b = ab.get("lora_A"), ab.get("lora_B")
        if a is None or b is None or a.dim() != 2 or b.dim() != 2 or a.shape[0] != b.shape[1]:
            continue
        a64, b64 = a.detach().double(), b.detach().double()
        # ||B·A||²_F = trace((A·Aᵀ)(Bᵀ·B)): r×r matrices only, never the out×in product of a 14B model's layer
        if float(torch.trace((a64 @ a64.T) @ (b64.T @ b64))) > 0:
            changed += 1
    changed += sum(1 for k, t in sd.items() if k.endswith("lora_B.bias") and bool(torch.any(t != 0)))
    if not changed:
        raise ModelLoadError(f"{path}: LoRA changes nothing ({len(pairs)} LoRA module(s), every B·A product is zero)"
                             if pairs else f"{path}: holds no LoRA matrices (no lora_A/lora_B weights after "
                             "conversion): it would change nothing")
    return changed


def apply_loras(experts: list[torch.nn.Module], loras: list[tuple[Path, float]]) -> list[str]:
    """Load every LoRA into every expert and activate them together with their weights; validated first."""
    try:
        import peft  # noqa: F401
    except ImportError as e:
        raise ModelLoadError("LoRAs need peft: pip install -e '.[lora]'") from e
    from diffusers.loaders import WanLoraLoaderMixin

    states = []
    for path, weight in loras:
        f = _lora_file(Path(path))
        try:
            sd = WanLoraLoaderMixin.lora_state_dict(str(f))
        except Exception as e:  # diffusers raises many kinds on foreign formats
            raise ModelLoadError(f"{f}: not a Wan LoRA diffusers can read ({type(e).__name__}: {str(e)[:120]})") from None
        sd = sd[0] if isinstance(sd, tuple) else sd
        if not isinstance(sd, dict):
            raise ModelLoadError(f"{f}: not a Wan LoRA diffusers can read (no state dict)")
        for i, e in enumerate(experts):     # structure first: a LoRA for another model says so, zero or not
            _check_fits(e, sd, f, f"expert {i}")
        check_changes_something(sd, f, float(weight))
        states.append(sd)
    names = [f"cos_lora_{i}" for i in range(len(loras))]
    for e in experts:
        for name, sd in zip(names, states):
            e.load_lora_adapter({k: v.clone() for k, v in sd.items()}, prefix="transformer", adapter_name=name)
        e.set_adapters(names, weights=[w for _, w in loras])
    return names
