"""Load a Wan system from a local diffusers-format directory, validating it first (offline, no hub).

Accepted layouts:
- a diffusers Wan2.x I2V pipeline directory: `model_index.json`, `transformer/`, optional
  `transformer_2/` (with `boundary_ratio` in `model_index.json`), `scheduler/`, `vae/`;
- a cos model directory (the organism): `cos_model.json`, `transformer/`, `scheduler/`, and a
  pixel-space VAE declared in `cos_model.json`.
Every problem is reported as one line naming the path, before any weights are read: every JSON a user can
hand-edit is read bounded (`cos.trust.read_regular`) and must be an object with values of the right types; a
transformer with no blocks (or a config whose `num_layers` disagrees with its weights), weights in a pickle
format (`.bin`, `.pt`, ...: diffusers would load them in place of the checked safetensors) and a LoRA that
changes nothing are refused; whatever diffusers still raises while building a component is one line too.
"""
from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from cos.errors import ModelLoadError
from cos.models.files import check_safetensors  # noqa: F401 - also imported from here
from cos.models.identity import weights_hash  # noqa: F401 - also imported from here
from cos.models.system import IdentityVAE, WanSystem, WanVAE

MAX_JSON_BYTES = 64 << 20     # the largest config or index a real model ships is a few hundred KB
PICKLE_WEIGHTS = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")


def _read_json(path: Path) -> dict:
    """A JSON object from a regular file of bounded size; ModelLoadError (one line naming the file) otherwise."""
    from cos.trust import read_regular

    try:
        doc = json.loads(read_regular(path, MAX_JSON_BYTES))
    except FileNotFoundError:
        raise ModelLoadError(f"{path}: missing") from None
    except json.JSONDecodeError as e:
        raise ModelLoadError(f"{path}: malformed JSON ({e.msg} at line {e.lineno})") from None
    except UnicodeDecodeError:
        raise ModelLoadError(f"{path}: malformed JSON (not UTF-8 text)") from None
    except OSError as e:
        raise ModelLoadError(f"{path}: unreadable ({str(e).removeprefix(f'{path}: ')})") from None
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{path}: must hold a JSON object, not {type(doc).__name__}")
    return doc


def _field(path: Path, cfg: dict, name: str, ok: Callable[[Any], bool], rule: str, default: Any = None) -> Any:
    """cfg[name] (or `default` when absent) if `ok` accepts it; else one line naming file, field, value and rule."""
    v = cfg.get(name, default)
    if not ok(v):
        raise ModelLoadError(f"{path}: {name}={v!r} {rule}")
    return v


def _pos_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


def _check_component(folder: Path, class_name: str | None) -> dict:
    if not folder.is_dir():
        raise ModelLoadError(f"{folder}: missing component folder")
    cfg = _read_json(folder / "config.json")
    if class_name is not None and cfg.get("_class_name") != class_name:
        raise ModelLoadError(f"{folder / 'config.json'}: _class_name is {cfg.get('_class_name')!r}, expected {class_name!r}")
    pickled = sorted(f.name for f in folder.iterdir() if f.suffix in PICKLE_WEIGHTS)
    if pickled:
        raise ModelLoadError(f"{folder / pickled[0]}: weights in a pickle format are not loaded (diffusers would "
                             "read them in place of the checked safetensors); convert to .safetensors or remove it")
    files = sorted(folder.glob("*.safetensors"))
    index = list(folder.glob("*.safetensors.index.json"))
    if index:
        wmap = _read_json(index[0]).get("weight_map", {})
        if not isinstance(wmap, dict) or not all(isinstance(v, str) for v in wmap.values()):
            raise ModelLoadError(f"{index[0]}: weight_map must map tensor names to shard file names")
        shards = set(wmap.values())
        missing = [s for s in sorted(shards) if not (folder / s).exists()]
        if missing:
            raise ModelLoadError(f"{folder}: shard {missing[0]} named in {index[0].name} is missing")
    if not files:
        raise ModelLoadError(f"{folder}: no .safetensors weights")
    names: set[str] = set()
    for f in files:
        names |= set(check_safetensors(f)) - {"__metadata__"}
    cfg["__tensor_names__"] = names     # for the checks of what the config says against the weights
    return cfg


def _check_transformer(path: Path, which: str, cfg: dict) -> None:
    """The config's shape fields have the right types, and its block count matches the weights' blocks."""
    cfg_path = path / which / "config.json"
    for name in ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "num_layers"):
        _field(cfg_path, cfg, name, _pos_int, "must be a positive integer (a transformer with no blocks or heads "
                                              "computes nothing)" if name == "num_layers" else "must be a positive integer")
    _field(cfg_path, cfg, "patch_size", lambda v: isinstance(v, list) and len(v) == 3 and all(map(_pos_int, v)),
           "must be a list of 3 positive integers", [1, 2, 2])
    blocks = {int(m.group(1)) for k in cfg["__tensor_names__"] if (m := re.match(r"(?:transformer\.)?blocks\.(\d+)\.", k))}
    if blocks != set(range(cfg["num_layers"])):
        raise ModelLoadError(f"{cfg_path}: num_layers={cfg['num_layers']} but the weights hold {len(blocks)} blocks"
                             + (f" (indices {min(blocks)}..{max(blocks)})" if blocks else ""))


def _building(what: Path, fn: Callable[[], Any]) -> Any:
    """Run a diffusers/transformers constructor; whatever it raises on a malformed file becomes one line."""
    try:
        return fn()
    except ModelLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - diffusers raises many kinds on configs that do not fit their weights
        msg = " ".join(str(e).split())[:200]
        raise ModelLoadError(f"{what}: cannot be loaded ({type(e).__name__}: {msg})") from None


def _scheduler(path: Path):
    import diffusers

    name = _check_scheduler(path)
    return _building(path / "scheduler" / "scheduler_config.json", lambda: getattr(diffusers, name).from_pretrained(
        path, subfolder="scheduler", local_files_only=True))


def _check_scheduler(path: Path) -> str:
    """The scheduler config's class is one cos samples with and its numbers are sane; returns the class name."""
    cfg_path = path / "scheduler" / "scheduler_config.json"
    cfg = _read_json(cfg_path)
    name = cfg.get("_class_name")
    if name not in ("UniPCMultistepScheduler", "FlowMatchEulerDiscreteScheduler"):
        raise ModelLoadError(f"{path / 'scheduler'}: scheduler {name!r} is not supported "
                             "(UniPCMultistepScheduler or FlowMatchEulerDiscreteScheduler)")
    for k in ("flow_shift", "shift"):
        if k in cfg:
            _field(cfg_path, cfg, k, _finite_pos, "must be a finite number > 0")
    if "num_train_timesteps" in cfg:
        _field(cfg_path, cfg, "num_train_timesteps", _pos_int, "must be a positive integer")
    return name


def _finite_pos(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _check_boundary(where: Path, v: Any) -> None:
    if v is not None and not (isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v < 1):
        raise ModelLoadError(f"{where}: boundary_ratio={v!r} must be a number in (0, 1)")


DEFAULT_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "num_frames": (_pos_int, "must be a positive integer"),
    "height": (lambda v: _pos_int(v) and v % 16 == 0, "must be a positive multiple of 16"),
    "width": (lambda v: _pos_int(v) and v % 16 == 0, "must be a positive multiple of 16"),
    "steps": (_pos_int, "must be a positive integer"),
    "guidance_scale": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0,
                       "must be a finite number >= 0"),
}


def check_cos_config(cfg_path: Path, cfg: dict) -> None:
    """cos_model.json's fields that loading and the claim settings use: types and ranges, one line each."""
    vae = _field(cfg_path, cfg, "vae", lambda v: isinstance(v, dict), "must be an object", {})
    if vae.get("type") != "identity":
        raise ModelLoadError(f"{cfg_path}: vae.type must be 'identity', got {vae.get('type')!r}")
    _field(cfg_path, vae, "channels", _pos_int, "(vae) must be a positive integer", 3)
    _check_boundary(cfg_path, cfg.get("boundary_ratio"))
    _field(cfg_path, cfg, "name", lambda v: isinstance(v, str) and v.strip() != "", "must be a non-empty string",
           "model")
    d = _field(cfg_path, cfg, "defaults", lambda v: isinstance(v, dict), "must be an object", {})
    for k, (ok, rule) in DEFAULT_RULES.items():
        if k in d:
            _field(cfg_path, d, k, ok, f"(defaults) {rule}")


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


def check_model_dir(path: str | Path) -> dict:
    """Every check of a model directory that reads no weights (configs, safetensors headers, what they say of
    each other): ModelLoadError, one line, at the first problem. Returns what loading needs of it."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: model path does not exist")
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model path is not a directory")
    cos_cfg_path, index_path = path / "cos_model.json", path / "model_index.json"
    if cos_cfg_path.exists():
        cos_cfg = _read_json(cos_cfg_path)
        check_cos_config(cos_cfg_path, cos_cfg)
        boundary = cos_cfg.get("boundary_ratio")
        z_dim, mask_ch = cos_cfg.get("vae", {}).get("channels", 3), 1
        cos_cfg.setdefault("name", path.name)
    elif index_path.exists():
        cos_cfg = {}
        index = _read_json(index_path)
        boundary = index.get("boundary_ratio")
        _check_boundary(index_path, boundary)
        vae_path = path / "vae" / "config.json"
        vae_json = _check_component(path / "vae", "AutoencoderKLWan")
        z_dim = _field(vae_path, vae_json, "z_dim", _pos_int, "must be a positive integer", 16)
        mask_ch = _field(vae_path, vae_json, "scale_factor_temporal", _pos_int, "must be a positive integer", 4)
    else:
        raise ModelLoadError(f"{path}: not a diffusers Wan directory (no model_index.json or cos_model.json)")

    experts = ["transformer"] + (["transformer_2"] if (path / "transformer_2").exists() else [])
    declared = index.get("transformer_2") if not cos_cfg else None
    if declared is not None and not (isinstance(declared, list) and len(declared) == 2):
        raise ModelLoadError(f"{index_path}: transformer_2={declared!r} must be [library, class] or absent")
    if declared and declared[0] is not None and "transformer_2" not in experts:
        raise ModelLoadError(f"{path / 'transformer_2'}: model_index.json declares a second expert but the folder is missing")
    for which in experts:
        tcfg = _check_component(path / which, "WanTransformer3DModel")
        _check_transformer(path, which, tcfg)
        _check_io(path, tcfg, z_dim, mask_ch, which)
    if len(experts) == 2 and boundary is None:
        raise ModelLoadError(f"{path}: two experts but no boundary_ratio in model_index.json")
    _check_scheduler(path)
    if cos_cfg and (path / "prompt_encoder.safetensors").exists():
        _check_prompt_encoder(path)
    if cos_cfg:
        shipped_distilled(path)    # its declaration feeds every claim's session fixtures: checked up front too
    return {"cos_cfg": cos_cfg, "boundary": boundary, "z_dim": z_dim, "mask_ch": mask_ch, "experts": experts}


def run_dtype(path: str | Path, device: str) -> torch.dtype:
    """The dtype a run loads `path` in: bf16 for a full Wan model on a GPU (as it ships), float32 for the organism
    and on a CPU. The fingerprint, hence every store key, holds it: what prices a run (`cos plan`) loads the same."""
    return torch.bfloat16 if str(device).startswith("cuda") and not (Path(path) / "cos_model.json").exists() \
        else torch.float32


def load_system(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, *,
                loras: Sequence[tuple[str | Path, float]] = (), flow_shift: float | None = None,
                offload: bool = False) -> WanSystem:
    """Validate, then load a Wan system from a local directory (see the module docstring for layouts).

    loras: (path, weight) pairs applied to every expert (`cos.models.lora`); flow_shift: override the shipped
    scheduler's shift (VBVR-Wan2.2 was evaluated at 50 steps, shift 5); offload: experts wait on the CPU.
    """
    from diffusers import AutoencoderKLWan, WanTransformer3DModel

    path = Path(path)
    layout = check_model_dir(path)
    cos_cfg, boundary, z_dim, experts = layout["cos_cfg"], layout["boundary"], layout["z_dim"], layout["experts"]
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
        m = _building(path / which, lambda: WanTransformer3DModel.from_pretrained(
            path, subfolder=which, torch_dtype=dtype, local_files_only=True))
        return m.eval().to("cpu" if offload else device)
    identity = weights_hash(path)   # before loading: a file that cannot be read is one line, not a torch error
    encode_prompt = None
    if cos_cfg:
        vae = IdentityVAE(z_dim)
        if (path / "prompt_encoder.safetensors").exists():
            enc = _prompt_encoder(path, device)
            encode_prompt = lambda prompts: enc(prompts).detach()  # noqa: E731
    else:
        vae = WanVAE(_building(path / "vae", lambda: AutoencoderKLWan.from_pretrained(
            path, subfolder="vae", torch_dtype=torch.float32, local_files_only=True)).eval().to(device))
        if (path / "text_encoder").is_dir() and (path / "tokenizer").is_dir():
            from cos.models.text import UMT5PromptEncoder

            _check_component(path / "text_encoder", None)
            encode_prompt = UMT5PromptEncoder(path, device=device, dtype=dtype)
    system = WanSystem(transformer=load_t("transformer"), transformer_2=load_t("transformer_2") if len(experts) == 2 else None,
                       boundary_ratio=boundary if len(experts) == 2 else None, scheduler=scheduler, vae=vae,
                       encode_prompt=encode_prompt,
                       name=cos_cfg.get("name", path.name), path=str(path), weights_hash=identity,
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


def _prompt_encoder(path: Path, device: str | torch.device):
    """The organism's word-level prompt encoder, its JSON and table checked against each other first."""
    from cos.models.prompt import TokenPromptEncoder

    _check_prompt_encoder(path)
    return _building(path / "prompt_encoder.safetensors", lambda: TokenPromptEncoder.load(path)).to(device)


def _check_prompt_encoder(path: Path) -> None:
    from cos.models.prompt import TokenPromptEncoder

    cfg_path = path / "prompt_encoder.json"
    cfg = _read_json(cfg_path)
    vocab = _field(cfg_path, cfg, "vocab", lambda v: isinstance(v, list) and all(isinstance(w, str) for w in v),
                   "must be a list of words")
    dim = _field(cfg_path, cfg, "text_dim", _pos_int, "must be a positive integer")
    _field(cfg_path, cfg, "max_len", _pos_int, "must be a positive integer")
    header = check_safetensors(path / "prompt_encoder.safetensors")
    n = len(TokenPromptEncoder(vocab, dim, 1).vocab)
    shape = (header.get("embedding") or {}).get("shape")
    if shape != [n, dim]:
        raise ModelLoadError(f"{path / 'prompt_encoder.safetensors'}: embedding of shape {shape}, but "
                             f"{cfg_path} has {n} words (with <pad>, <unk>) of dimension {dim}")


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
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) and isinstance(i.get("path"), str)
                                                           for i in items):
        raise ModelLoadError(f"{cfg_path}: \"distilled\" must hold a non-empty list \"loras\" of {{\"path\", \"weight\"}}")
    loras = []
    for i in items:
        f = path / i["path"]
        if not f.resolve().is_relative_to(path.resolve()):
            raise ModelLoadError(f"{cfg_path}: distilled LoRA path {i['path']!r} leads outside the model directory")
        if not f.exists():
            raise ModelLoadError(f"{f}: the distilled LoRA declared in {cfg_path} is missing")
        w = _field(cfg_path, i, "weight", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
                   and math.isfinite(v) and v != 0, "(distilled.loras) must be a finite nonzero number", 1.0)
        loras.append((f, float(w)))
    steps = _field(cfg_path, decl, "steps", _pos_int, "(distilled) must be a positive integer", 4)
    gs = _field(cfg_path, decl, "guidance_scale", DEFAULT_RULES["guidance_scale"][0],
                "(distilled) must be a finite number >= 0", 1.0)
    return {"loras": loras, "steps": steps, "guidance_scale": float(gs)}


def weights_hash_with_loras(base: str, loras: Sequence[tuple[Path, float]]) -> str:
    """The base weights' hash combined with each LoRA's content hash (not its folder or name) and weight."""
    h = hashlib.sha256(base.encode())
    for p, w in loras:
        h.update(f"{weights_hash(p)}@{float(w)!r};".encode())
    return h.hexdigest()[:32]
