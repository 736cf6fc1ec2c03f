"""Planted DiTs: Wan-shaped transformers with constructed blocks, whose effect on a claim is known by construction.

`PlantedDiT` quacks like a `WanTransformer3DModel` for the shared sampler and `HookSession`: `patch_embedding`
turns the input (x_s, mask, condition) into one token per latent pixel (B, D, f, h, w), `blocks` update a residual
stream of (B, N, D) tokens, called as block(hidden_states, encoder_hidden_states, temb, rotary_emb), so block
hooks, swaps and ensembles act on real block updates (output − input). Token channels (D = 18):

    0-2 x_s · 3 mask · 4-6 condition (the first frame in [-1, 1]) · 7-14 CODE (one per candidate) · 15-17 SCENE
    · 18-25 TASK (the row's answer, one-hot, written by the embedding)

The head is the closed-form reference denoiser (`cos/models/reference.py`: exact flow-matching posterior over the
row's candidate videos, bound per batch by `bind_planted`), reweighted by a log-prior β·code read from the CODE
channels of the final residual stream (their mean over tokens). Blocks write CODE only at the commit step (the
first step of a schedule, s = 1), where the posterior is the prior: the decision is the code. So that the decision
outlives that step (the prior is uniform afterwards), the commit step extrapolates x̂0 away from the candidates'
mean by `gain` (x̂0 = c̄ + gain·(Σ w_k c_k − c̄)): x_1 then leans so far towards the coded candidate that the
uniform-prior posterior of every later step keeps it (a model that decides at step 0).

Blocks: `CodeBlock` writes the answer's identity, read from the TASK channels of its input (the batch binder hands
the model each row's answer and the embedding writes it into every token, as the first frame and prompt enter a
Wan model once, at its input: that is the planting), with optional noise, `SceneBlock` writes the first frame's colours on its foreground tokens
(answer-free). Each control builds its own stack (`cos.controls`) and says why it plants its claim.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch

from cos.models.reference import ClosedFormModel, ReferenceDenoiser

if TYPE_CHECKING:
    from cos.models.system import WanSystem
    from cos.taskrun import TaskBatch

K_MAX = 8                                          # candidates a row may have (the suite's tasks have ≤ 6)
X, MASK, COND = slice(0, 3), 3, slice(4, 7)
CODE = slice(7, 7 + K_MAX)
SCENE = slice(7 + K_MAX, 10 + K_MAX)
TASK = slice(10 + K_MAX, 10 + 2 * K_MAX)
DIM = 10 + 2 * K_MAX
TASK_SCALE = 1e-3      # small: the TASK channels must not move the token energies energy_profile reads
# the first step of a flow-Euler schedule has σ = 1 exactly, of UniPC's (integer timesteps) t = 999: s = 0.999;
# the second stays below 0.998 up to ~167 steps (shift 3: σ_1 = 3t/(1 + 2t), t = 1 − 1/N), so exactly one commits
COMMIT_S = 0.998


@dataclass
class BlockInputs:
    """What every block may read besides its tokens (passed where Wan passes the rotary embedding). Not the
    answer: a block reads that from its input tokens (TASK), so a swap of whole block outputs carries it on."""

    s: torch.Tensor          # (B,) noise level of the step
    grid: tuple[int, int, int]
    valid: torch.Tensor      # (B, K_MAX) bool: the row's real candidates

    @property
    def commit(self) -> torch.Tensor:
        return self.s >= COMMIT_S


def _grid(tokens: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
    return tokens.reshape(tokens.shape[0], *grid, tokens.shape[-1])


def instance_key(tokens: torch.Tensor, grid: tuple[int, int, int]) -> list[int]:
    """Per row, a 63-bit key of its first frame (the condition channels of frame 0): a deterministic
    pseudo-random function of the instance, the same for every seed."""
    cond = _grid(tokens, grid)[:, 0, :, :, COND].detach().cpu().double().round(decimals=4)
    return [int.from_bytes(hashlib.blake2b(c.numpy().tobytes(), digest_size=8).digest(), "little") >> 1 for c in cond]


@lru_cache(maxsize=4096)
def _projection(key: int, n: int) -> torch.Tensor:
    """K_MAX orthonormal directions in R^n drawn from `key`: a projection of N(0, I) on them is N(0, I_K)."""
    g = torch.Generator().manual_seed(key)
    q, _ = torch.linalg.qr(torch.randn(n, K_MAX, generator=g, dtype=torch.float64))
    return q.T.contiguous()                                           # (K_MAX, n)


def instance_noise(key: int) -> torch.Tensor:
    """ε ~ N(0, I_K) fixed per instance (shared by its seeds)."""
    return torch.randn(K_MAX, generator=torch.Generator().manual_seed(key ^ 0x5EED), dtype=torch.float64)


def frame_noise(tokens: torch.Tensor, grid: tuple[int, int, int], keys: list[int]) -> torch.Tensor:
    """(B, f − 1, K_MAX): each generated latent frame's x_s read through the instance's projection. At the commit
    step x_s is the seed's noise, so each entry is N(0, 1), independent across frames, seeds and (through the
    instance's own directions) instances."""
    x = _grid(tokens, grid)[:, 1:, :, :, X].double().flatten(2)         # (B, f − 1, h·w·3)
    p = torch.stack([_projection(k, x.shape[-1]) for k in keys]).to(x.device)   # (B, K_MAX, n)
    return torch.einsum("bfn,bkn->bfk", x, p)


class CodeBlock(torch.nn.Module):
    """Writes the answer's identity into CODE at the commit step:
        weight · (μ·onehot(answer) + σ_inst·ε + σ_seed·ν),
    ε ~ N(0, I) the instance's own (`instance_noise`: the same for all its seeds), ν ~ N(0, I) the seed's noise
    read from the generated frames of the block's input (`frame_noise`, normalized sum over frames). With
    `per_frame`, every generated frame adds its own evidence instead: weight · Σ_f (μ·onehot + σ_inst·ε +
    σ_seed·n_f), so the seed's noise averages out over more frames. Nothing at any other step, nothing on a row's
    padding candidates. Blocks of different `salt` read independent noise."""

    def __init__(self, weight: float = 1.0, mu: float = 1.0, sigma_seed: float = 0.0, sigma_inst: float = 0.0,
                 per_frame: bool = False, salt: int = 0):
        super().__init__()
        self.weight, self.mu, self.sigma_seed, self.sigma_inst = weight, mu, sigma_seed, sigma_inst
        self.per_frame, self.salt = per_frame, salt

    def extra_repr(self) -> str:
        return (f"weight={self.weight}, mu={self.mu}, sigma_seed={self.sigma_seed}, sigma_inst={self.sigma_inst}, "
                f"per_frame={self.per_frame}, salt={self.salt}")

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, temb: torch.Tensor,
                rotary_emb: BlockInputs) -> torch.Tensor:
        ctx, b = rotary_emb, hidden_states.shape[0]
        m = max(1, ctx.grid[0] - 1)                                    # generated latent frames
        # blocks with different salts read independent noise from the same input
        keys = [k ^ (self.salt * 0x9E3779B97F4A7C15 % 2**62) for k in instance_key(hidden_states, ctx.grid)] \
            if (self.sigma_seed or self.sigma_inst) else []
        noise = (frame_noise(hidden_states, ctx.grid, keys).sum(1) if self.sigma_seed
                 else torch.zeros(b, K_MAX, dtype=torch.float64))      # (B, K) ~ N(0, m·I)
        answers = hidden_states[..., TASK].float().mean(1).argmax(1)      # what the stream says the task is
        onehot = torch.nn.functional.one_hot(answers, K_MAX).double()
        shared = self.mu * onehot                                      # the instance's evidence, in every frame
        if self.sigma_inst:
            shared = shared + self.sigma_inst * torch.stack([instance_noise(k) for k in keys])
        if self.per_frame:
            code = m * shared + self.sigma_seed * noise
        else:
            code = shared + self.sigma_seed * noise / m ** 0.5
        code = self.weight * code * ctx.valid * ctx.commit.view(-1, 1)
        update = torch.zeros_like(hidden_states)
        update[..., CODE] = code.to(hidden_states.dtype).unsqueeze(1)
        return hidden_states + update


class _AfterCommit(BlockInputs):
    """`BlockInputs` whose write window is every step after the commit step (for `LateCodeBlock`)."""

    @property
    def commit(self) -> torch.Tensor:
        return self.s < COMMIT_S


class LateCodeBlock(CodeBlock):
    """A `CodeBlock` that writes the answer's code at every step after the commit step and nothing at it: a model
    that decides after step 0. At step 0 no block writes a code, so the head's x̂0 there is the candidates' mean
    (the posterior at s = 1 is the uniform prior and the commit extrapolation has nothing to extrapolate), whatever
    is done to the blocks at that step: no step-0 intervention can move the outcome (the planted case of no
    leverage at step 0). At every later step the code prior β·code decides, its seed noise read from x_s as
    `CodeBlock` reads it (at s < 1, x_s also carries the trajectory's own signal, shared by the seeds)."""

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, temb: torch.Tensor,
                rotary_emb: BlockInputs) -> torch.Tensor:
        late = _AfterCommit(rotary_emb.s, rotary_emb.grid, rotary_emb.valid)
        return super().forward(hidden_states, encoder_hidden_states, temb, late)


class SceneBlock(torch.nn.Module):
    """Adds `amp` × the first frame's colour (in [0, 1]; 0 on the black background) of each token's position, at
    every frame (it reads frame 0 as temporal attention would), into SCENE: energy on the foreground objects only.
    A negative `amp` takes back what earlier blocks wrote. Answer-free: it sees the scene, not the answer."""

    def __init__(self, amp: float):
        super().__init__()
        self.amp = amp

    def extra_repr(self) -> str:
        return f"amp={self.amp}"

    def forward(self, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None, temb: torch.Tensor,
                rotary_emb: BlockInputs) -> torch.Tensor:
        g = _grid(hidden_states, rotary_emb.grid)
        colour = (g[:, :1, :, :, COND] + 1) / 2                        # (B, 1, h, w, 3), black → 0
        update = torch.zeros_like(g)
        update[..., SCENE] = self.amp * colour.expand(-1, g.shape[1], -1, -1, -1)
        return hidden_states + update.reshape(hidden_states.shape)


class TokenEmbedding(torch.nn.Module):
    """(B, 7, F, H, W) → (B, DIM, F, H, W): the input channels as token features, CODE, SCENE and TASK zero
    (`PlantedDiT.forward` writes TASK after it)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pad = x.new_zeros(x.shape[0], DIM - x.shape[1], *x.shape[2:])
        return torch.cat([x, pad], dim=1)


class PlantedDiT(ClosedFormModel):
    """A constructed Wan-shaped DiT (see the module doc). `beta`: strength of the code prior (β·code, code in units
    of μ); `gain`: the commit step's extrapolation of x̂0 away from the candidates' mean."""

    def __init__(self, blocks: list[torch.nn.Module], channels: int = 3, beta: float = 50.0, gain: float = 25.0,
                 num_train_timesteps: int = 1000):
        super().__init__(channels, num_train_timesteps=num_train_timesteps)
        self.beta, self.gain = beta, gain
        self.patch_embedding = TokenEmbedding()
        self.blocks = torch.nn.ModuleList(blocks)
        self.reference = ReferenceDenoiser(channels)      # the head's posterior (and the module's device)
        self.valid: torch.Tensor | None = None
        self.answers: torch.Tensor | None = None

    def bind(self, candidates: torch.Tensor, valid: torch.Tensor, answers: torch.Tensor) -> "PlantedDiT":
        """candidates (B, K, C, F, H, W) in latent space, valid (B, K) bool, answers (B,)."""
        k = candidates.shape[1]
        if k > K_MAX:
            raise ValueError(f"PlantedDiT: {k} candidates, at most {K_MAX}")
        self.reference.set_candidates(candidates, valid.double())
        self.valid = torch.nn.functional.pad(valid, (0, K_MAX - k))
        self.answers = answers.long()
        return self

    def forward(self, hidden_states: torch.Tensor, timestep: torch.Tensor, encoder_hidden_states=None,
                encoder_hidden_states_image=None, attention_kwargs=None, return_dict: bool = False
                ) -> tuple[torch.Tensor]:
        if self.valid is None:
            raise RuntimeError("PlantedDiT: bind a batch (bind_planted) before sampling")
        b = hidden_states.shape[0]
        rep = b // self.valid.shape[0]                     # batched CFG doubles the rows
        s = self.level(timestep)
        tokens = self.patch_embedding(hidden_states.float())
        grid = tuple(tokens.shape[2:])
        h = tokens.flatten(2).transpose(1, 2)              # (B, N, D), frame-major as Wan's tokens
        h[..., TASK] = TASK_SCALE * torch.nn.functional.one_hot(self.answers.repeat(rep), K_MAX).to(h.dtype)[:, None]
        ctx = BlockInputs(s, grid, self.valid.repeat(rep, 1))
        for block in self.blocks:
            h = block(h, encoder_hidden_states, s, ctx)
        x = hidden_states[:, : self.channels].float()
        k = self.reference.candidates.shape[1]
        code = h[..., CODE].mean(1).double()[:, :k]
        w = torch.softmax(self.reference.posterior(x, s).log() + self.beta * code, dim=1)     # posterior × code prior
        c = self.reference.candidates.repeat(rep, 1, 1, 1, 1, 1).double()
        x0 = torch.einsum("bk,bkcfhw->bcfhw", w, c)
        uniform = ctx.valid[:, :k].double() / ctx.valid.sum(1, keepdim=True)      # over the row's real candidates
        mean = torch.einsum("bk,bkcfhw->bcfhw", uniform, c)
        commit = ctx.commit.view(-1, 1, 1, 1, 1)
        x0 = torch.where(commit, mean + self.gain * (x0 - mean), x0)
        v = (x.double() - x0) / s.view(-1, 1, 1, 1, 1)
        return (v.float(),)


def bind_planted(system: "WanSystem", batch: "TaskBatch") -> None:
    """The `WanSystem.batch_binder` of a planted DiT: each row's candidate videos and its answer."""
    from cos.taskrun import candidate_latents

    cands, valid = candidate_latents(batch, system)
    system.transformer.bind(cands, valid, torch.tensor([i.answer for i in batch.instances]))


def planted_system(blocks: list[torch.nn.Module], name: str, beta: float = 50.0, gain: float = 25.0) -> "WanSystem":
    """A pixel-space `WanSystem` around a planted DiT (flow Euler, shift 3). Its `weights_hash` spells out the
    construction, so two planted models never share stored runs."""
    from cos.models.system import IdentityVAE, WanSystem
    from cos.models.tiny import euler

    model = PlantedDiT(blocks, beta=beta, gain=gain).eval()
    desc = f"planted-dit/v2 beta={beta} gain={gain} commit_s={COMMIT_S} " + ";".join(f"{type(b).__name__}({b.extra_repr()})"
                                                                 for b in blocks)
    return WanSystem(transformer=model, scheduler=euler(3.0), vae=IdentityVAE(3), name=name,
                     weights_hash="planted-" + hashlib.sha256(desc.encode()).hexdigest()[:24],
                     batch_binder=bind_planted, extra={"planted": desc})
