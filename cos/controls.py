"""Models whose outcome on a claim is known, for the claims' controls (cheap enough for the default test tier):
the closed-form reference denoiser (global or per-frame, uniform or oracle prior) and untrained models of the
organism's architecture. Each claim's module says which of these is its positive or negative control and why."""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

import torch

from cos.models.reference import reference_system
from cos.models.system import WanSystem
from cos.settings import ClaimSettings

# the organism's architecture (fixtures/organism_train.json "model"), so a control needs no file of this repo
ORGANISM_CONFIG = {"patch_size": [1, 2, 2], "num_attention_heads": 2, "attention_head_dim": 32, "in_channels": 7,
                   "out_channels": 3, "text_dim": 32, "freq_dim": 64, "ffn_dim": 256, "num_layers": 12,
                   "cross_attn_norm": True, "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 64}

# sizes of the controls: a few instances of a few tasks, seconds on 2 CPU cores
SMALL = ClaimSettings(tasks=("maze", "pattern", "rotation", "tictactoe"), instances=3, seeds=(0, 1), steps=10,
                      num_frames=9)
TINY = ClaimSettings(tasks=("grounding", "pattern"), instances=2, seeds=(0,), steps=3, num_frames=5)


# A planted recipe's weight seed: 0 builds every control exactly as its claim wrote it; `weight_seed(s)` builds the
# same recipe "retrained" (what a seed changes in it: a random model's init, a planted DiT's noise salts, a
# scripted trajectory's row generators). `cos validate --kind gate` builds its retrained copies inside it, so no
# claim's control needs a parameter for it. A recipe without weight randomness (the reference denoiser, an answer
# prior, foreground energies) is the same model at every seed: its weights_hash does not change.
_WEIGHT_SEED: contextvars.ContextVar[int] = contextvars.ContextVar("cos_weight_seed", default=0)


@contextlib.contextmanager
def weight_seed(seed: int) -> Iterator[None]:
    """Controls built inside are their recipe at weight seed `seed` (0: as written)."""
    token = _WEIGHT_SEED.set(int(seed))
    try:
        yield
    finally:
        _WEIGHT_SEED.reset(token)


def _salted(salt: int) -> int:
    """A planted block's noise salt at the weight seed in force (the salt itself at seed 0)."""
    ws = _WEIGHT_SEED.get()
    return salt if ws == 0 else salt + 1_000_003 * ws


def ref(per_frame: bool = False, prior: str = "uniform") -> WanSystem:
    """The reference denoiser: superposes the candidates early and commits late, analytically (`oracle`: all
    prior mass on the answer, committed from step 0; `per_frame`: each frame decides on its own)."""
    return reference_system(per_frame=per_frame, prior=prior)


def random_organism(seed: int = 0, num_layers: int = 12) -> WanSystem:
    """An untrained model of the organism's architecture (random weights, random prompt table)."""
    from diffusers import WanTransformer3DModel

    from cos.models.prompt import TokenPromptEncoder
    from cos.models.system import IdentityVAE
    from cos.models.tiny import unipc

    ws = _WEIGHT_SEED.get()
    torch.manual_seed(seed if ws == 0 else seed + 7919 * ws)
    model = WanTransformer3DModel(**{**ORGANISM_CONFIG, "num_layers": num_layers}).eval()
    enc = TokenPromptEncoder(["mark", "the", "object"], ORGANISM_CONFIG["text_dim"])
    return WanSystem(transformer=model, scheduler=unipc(), vae=IdentityVAE(3), name="random-organism",
                     encode_prompt=lambda p: enc(p).detach())


# ---------------------------------------------------------------- planted models of the trajectory claims
def scripted(name: str, steps: int, **config) -> WanSystem:
    """A scripted x̂0 trajectory (cos/models/scripted.py) on an Euler schedule of `steps` steps: `name` is
    "wrong_then_right" (selfcorrection.rate), "grounding_lag" (perception.before_action), "pick"
    (bench.table1), "anchor_lapse" (memory.persistence), "frames_apart" (cos.not_frames) or "committed"
    (the nulls of cos.superposition and perception.before_action), `config` its arguments."""
    from cos.models import scripted as sc

    make = {"wrong_then_right": sc.wrong_then_right, "grounding_lag": sc.grounding_lag, "pick": sc.pick,
            "anchor_lapse": sc.anchor_lapse, "frames_apart": sc.frames_apart, "committed": sc.committed}[name]
    script = make(**config)
    desc = ",".join(f"{k}={sorted(v.items()) if isinstance(v, dict) else v}" for k, v in sorted(config.items()))
    if _WEIGHT_SEED.get():   # the rows' generators are salted by the description: another seed, other draws
        desc += f",weight_seed={_WEIGHT_SEED.get()}"
    return sc.scripted_system(name, script, steps, config=desc)


def answer_prior(mass) -> WanSystem:
    """The reference denoiser with prior `mass` on the right answer (per split as {"id": .., "ood": ..}; None:
    uniform). Few-step sampling is mode-seeking: it lands on the answer somewhat more often than `mass`."""
    from cos.models.scripted import answer_prior_system

    return answer_prior_system(mass)


# ---------------------------------------------------------------- planted DiTs (cos/models/planted.py)
def answer_at(code: dict[int, float], num_layers: int = 8, mu: float = 1.0, sigma_seed: float = 0.0,
              sigma_inst: float = 0.0, per_frame: bool = False, scene: float = 0.1) -> WanSystem:
    """A planted DiT deciding at step 0: the blocks in `code` (block → weight) write the answer's code
    (μ·onehot + seed and instance noise, `CodeBlock`), every other block writes only the scene (`SceneBlock`,
    answer-free). Its outcome is the argmax of the summed code."""
    from cos.models.planted import CodeBlock, SceneBlock, planted_system

    blocks = [CodeBlock(code[k], mu, sigma_seed, sigma_inst, per_frame, salt=_salted(k) if sigma_seed or sigma_inst else k)
              if k in code else SceneBlock(scene) for k in range(num_layers)]
    return planted_system(blocks, f"planted-answer-at-{'-'.join(map(str, sorted(code)))}")


def answer_after_step0(code: dict[int, float], num_layers: int = 8, mu: float = 1.0, sigma_seed: float = 0.0,
                       sigma_inst: float = 0.0, scene: float = 0.1) -> WanSystem:
    """A planted DiT deciding after step 0: as `answer_at`, but the blocks in `code` write the answer's code at
    every step except the first (`LateCodeBlock`), so step 0's x̂0 is the candidates' mean whatever is done to its
    blocks there. The controls of no leverage: a step-0 intervention, even at its maximum, cannot move it; the
    same intervention at every step can."""
    from cos.models.planted import LateCodeBlock, SceneBlock, planted_system

    blocks = [LateCodeBlock(code[k], mu, sigma_seed, sigma_inst, salt=_salted(k) if sigma_seed or sigma_inst else k)
              if k in code else SceneBlock(scene) for k in range(num_layers)]
    return planted_system(blocks, f"planted-answer-after-step0-at-{'-'.join(map(str, sorted(code)))}")


def foreground_energy(increments: tuple[float, ...], amp: float = 1.0) -> WanSystem:
    """A planted DiT whose block k adds amp·increments[k] × the first frame's colour on foreground tokens
    (`SceneBlock`): where the increments rise then fall, the foreground energy peaks at those blocks."""
    from cos.models.planted import SceneBlock, planted_system

    return planted_system([SceneBlock(amp * a) for a in increments], "planted-foreground-energy")


def with_scheduler(system: WanSystem, name: str) -> WanSystem:
    """`system` sampled with another scheduler ("unipc": Wan's UniPC multistep, flow sigmas; "euler"), named so
    (its fingerprint covers the scheduler, so runs are keyed apart)."""
    from cos.models.tiny import euler, unipc

    system.scheduler = {"unipc": unipc, "euler": euler}[name]()
    system.name = f"{system.name}+{name}"
    return system
