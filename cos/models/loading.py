"""Load a Wan system from a local diffusers-format directory, validating it first (offline, no hub).

Accepted layouts:
- a diffusers Wan2.x I2V pipeline directory: `model_index.json`, `transformer/`, optional
  `transformer_2/` (with `boundary_ratio` in `model_index.json`), `scheduler/`, `vae/`;
- a cos model directory (the organism): `cos_model.json`, `transformer/`, `scheduler/`, and a
  pixel-space VAE declared in `cos_model.json`.
Every problem is reported as one line naming the path, before any weights are read.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from cos.errors import ModelLoadError
from cos.models.files import check_safetensors  # noqa: F401 - also imported from here
from cos.models.identity import weights_hash  # noqa: F401 - also imported from here
from cos.models.system import IdentityVAE, WanSystem, WanVAE

def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None


def _check_component(folder: Path, class_name: str | None) -> dict:
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: missing component folder")
    cfg = _read_json(folder / "config.json")
    if class_name is not None and cfg.get("_class_name") != class_name:
        raise ModelLoadError(f"{folder / 'config.json'}: _class_name is {cfg.get('_class_name')!r}, expected {class_name!r}")
    files = sorted(folder.glob("*.safetensors"))
    index = list(folder.glob("*.safetensors.index.json"))
    if index:
        shards = set(_read_json(index[0]).get("weight_map", {}).values())
        missing = [s for s in sorted(shards) if not (folder / s).exists()]
        if missing:
            raise ModelLoadError(f"{folder}: shard {missing[0]} named in {index[0].name} is missing")
    if not files:
        raise ModelLoadError(f"{folder}: no .safetensors weights")
    for f in files:
        check_safetensors(f)
    return cfg


def _scheduler(path: Path):
    import diffusers

    cfg = _read_json(path / "scheduler" / "scheduler_config.json")
    name = cfg.get("_class_name")
    if name not in ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"):
        raise ModelLoadError(f"{path / 'scheduler'}: scheduler {name!r} is not supported "
                             "(UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler)")
    return getattr(diffusers, name).from_pretrained(path, subfolder="scheduler", local_files_only=True)


def _check_io(path: Path, tcfg: dict, z_dim: int, mask_ch: int, which: str) -> None:
    want_in = 2 * z_dim + mask_ch
    if tcfg.get("in_channels") != want_in:
        raise ModelLoadError(f"{path / which / 'config.json'}: in_channels={tcfg.get('in_channels')} but an I2V model "
                             f"with this VAE needs {want_in} (latent {z_dim} + mask {mask_ch} + image {z_dim})")
    if tcfg.get("out_channels") != z_dim:
        raise ModelLoadError(f"{path / which / 'config.json'}: out_channels={tcfg.get('out_channels')}, VAE z_dim={z_dim}")


def _expert_bytes(path: Path, experts: list[str], dtype: torch.dtype) -> int:
    """Bytes the experts take in `dtype`, from their safetensors headers (no weights read)."""
    total = 0
    for which in experts:
        for f in (path / which).glob("*.safetensors"):
            for k, v in check_safetensors(f).items():
                if k != "__metadata__":
                    total += int(np.prod(v["shape"])) * torch.empty((), dtype=dtype).element_size()
    return total


def check_fits(path: Path, experts: list[str], dtype: torch.dtype, device: str | torch.device, offload: bool) -> None:
    """Before loading: the experts (one at a time with offload) must fit the GPU with room for activations."""
    dev = torch.device(device)
    if dev.type != "cuda" or not torch.cuda.is_available():
        return
    free, _ = torch.cuda.mem_get_info(dev)
    per = [_expert_bytes(path, [e], dtype) for e in experts]
    need = max(per) if offload else sum(per)
    if need > 0.9 * free:
        hint = "" if offload else "; pass --cos-offload to keep one expert at a time on the GPU"
        raise ModelLoadError(f"{path}: the experts need {need / 2**30:.1f} GiB in {dtype} but {device} has "
                             f"{free / 2**30:.1f} GiB free{hint}")


def load_system(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                loras: Sequence[tuple[str | Path, float]] = (), flow_shift: float | None = None,
                offload: bool = False) -> WanSystem:
    """Validate, then load a Wan system from a local directory (see the module docstring for layouts).

    loras: (path, weight) pairs applied to every expert (`cos.models.lora`); flow_shift: override the shipped
    scheduler's shift (VBVR-Wan2.2 was evaluated at 50 steps, shift 5); offload: experts wait on the CPU.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: model path does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model path is not a directory")
    cos_cfg_path, index_path = path / "cos_model.json", path / "model_index.json"
    if cos_cfg_path.exists():
        cos_cfg = _read_json(cos_cfg_path)
        boundary = cos_cfg.get("boundary_ratio")
        vae_cfg = cos_cfg.get("vae", {})
        if vae_cfg.get("type") != "identity":
            raise ModelLoadError(f"{cos_cfg_path}: vae.type must be 'identity', got {vae_cfg.get('type')!r}")
        z_dim, mask_ch = int(vae_cfg.get("channels", 3)), 1
    elif index_path.exists():
        cos_cfg = {}
        boundary = _read_json(index_path).get("boundary_ratio")
        vae_json = _check_component(path / "vae", "AutoencoderKLWan")
        z_dim, mask_ch = vae_json.get("z_dim", 16), vae_json.get("scale_factor_temporal", 4)
    else:
        raise ModelLoadError(f"{path}: not a diffusers Wan directory (no model_index.json or cos_model.json)")

    experts = ["transformer"] + (["transformer_2"] if (path / "transformer_2").exists() else [])
    declared = _read_json(index_path).get("transformer_2") if index_path.exists() and not cos_cfg else None
    if declared and declared[0] is not None and "transformer_2" not in experts:
        raise ModelLoadError(f"{path / 'transformer_2'}: model_index.json declares a second expert but the folder is missing")
    for which in experts:
        _check_io(path, _check_component(path / which, "WanTransformer3DModel"), z_dim, mask_ch, which)
    if len(experts) == 2 and boundary is None:
        raise ModelLoadError(f"{path}: two experts but no boundary_ratio in model_index.json")
    scheduler = _scheduler(path)
    if flow_shift is not None:
        if "flow_shift" not in scheduler.config and "shift" not in scheduler.config:
            raise ModelLoadError(f"{path / 'scheduler'}: {type(scheduler).__name__} has no flow shift to override")
        key = "flow_shift" if "flow_shift" in scheduler.config else "shift"
        scheduler = type(scheduler).from_config({**scheduler.config, key: float(flow_shift)})
    lora_files = [(Path(p), float(w)) for p, w in loras]
    for p, _ in lora_files:
        if not p.exists():
            raise ModelLoadError(f"{p}: LoRA path does not exist")
    check_fits(path, experts, dtype, device, offload)

    def load_t(which):
        m = WanTransformer3DModel.from_pretrained(path, subfolder=which, torch_dtype=dtype, local_files_only=True)
        return m.eval().to("cpu" if offload else device)
    encode_prompt = None
    if cos_cfg:
        vae = IdentityVAE(z_dim)
        if (path / "prompt_encoder.safetensors").exists():
            from cos.models.prompt import TokenPromptEncoder

            check_safetensors(path / "prompt_encoder.safetensors")
            enc = TokenPromptEncoder.load(path).to(device)
            encode_prompt = lambda prompts: enc(prompts).detach()  # noqa: E731
    else:
        vae = WanVAE(AutoencoderKLWan.from_pretrained(path, subfolder="vae", torch_dtype=torch.float32,
                                                      local_files_only=True).eval().to(device))
        if (path / "text_encoder").is_dir() and (path / "tokenizer").is_dir():
            from cos.models.text import UMT5PromptEncoder

            _check_component(path / "text_encoder", None)
            encode_prompt = UMT5PromptEncoder(path, device=device, dtype=dtype)
    system = WanSystem(transformer=load_t("transformer"), transformer_2=load_t("transformer_2") if len(experts) == 2 else None,
                       boundary_ratio=boundary if len(experts) == 2 else None, scheduler=scheduler, vae=vae,
                       encode_prompt=encode_prompt,
                       name=cos_cfg.get("name", path.name), path=str(path), weights_hash=weights_hash(path),
                       extra=cos_cfg, offload=offload, execution_device=str(device) if offload else None)
    if lora_files:
        from cos.models.lora import apply_loras

        apply_loras(system.experts, lora_files)
        system.name += "+" + "+".join(f"{p.stem}@{w:g}" for p, w in lora_files)
        system.loras = [(weights_hash(p), w) for p, w in lora_files]
        system.weights_hash = weights_hash_with_loras(system.weights_hash, lora_files)
    if flow_shift is not None:
        system.extra = {**system.extra, "flow_shift": float(flow_shift)}
    return system


def shipped_distilled(path: str | Path) -> dict | None:
    """The model directory's own distilled LoRA stack, declared in cos_model.json as
    `"distilled": {"loras": [{"path": "distill/x.safetensors", "weight": 1.0}], "steps": 4, "guidance_scale": 1}`
    (paths relative to the directory): {"loras": [(Path, weight)], "steps", "guidance_scale"}; None when the
    directory declares none (a diffusers Wan directory never does). A declared file that is missing is an error."""
    path = Path(path)
    cfg_path = path / "cos_model.json"
    if not cfg_path.exists():
        return None
    decl = _read_json(cfg_path).get("distilled")
    if not decl:
        return None
    items = decl.get("loras") if isinstance(decl, dict) else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) and "path" in i for i in items):
        raise ModelLoadError(f"{cfg_path}: \"distilled\" must hold a non-empty list \"loras\" of {{\"path\", \"weight\"}}")
    loras = []
    for i in items:
        f = path / i["path"]
        if not f.exists():
            raise ModelLoadError(f"{f}: the distilled LoRA declared in {cfg_path} is missing")
        loras.append((f, float(i.get("weight", 1.0))))
    return {"loras": loras, "steps": int(decl.get("steps", 4)), "guidance_scale": float(decl.get("guidance_scale", 1.0))}


def weights_hash_with_loras(base: str, loras: Sequence[tuple[Path, float]]) -> str:
    """The base weights' hash combined with each LoRA's content hash (not its folder or name) and weight."""
    h = hashlib.sha256(base.encode())
    for p, w in loras:
        h.update(f"{weights_hash(p)}@{float(w)!r};".encode())
    return h.hexdigest()[:32]
