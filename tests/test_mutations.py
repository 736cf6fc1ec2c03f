"""Breaking a claim's measurement must make its positive control fail: one mutation per claim family.

Each test runs the family's planted positive control twice, as written (it holds) and with one part of the
measurement broken by monkeypatching (it must then not hold). A control that holds whatever the measurement
does would be a check that cannot fail."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from cos.interventions import NoiseAtStep
from cos.registry import get_claim


def positive(claim_id: str, name: str | None = None):
    claim = get_claim(claim_id)
    ctl = next(c for c in claim.controls() if c.kind == "positive" and (name is None or c.name == name))
    return claim, ctl


def test_trajectory_reading_the_final_video_at_every_step_breaks_superposition(monkeypatch):
    """Trajectory family: read the final step's x̂0 in place of x̂0 along the steps."""
    import cos.claims.superposition as mod

    claim, ctl = positive("cos.superposition")
    assert ctl.run(claim).status == "holds"
    # patched where the claim reads it (it imports step_videos by name); patching cos.readouts alone once
    # left this positive holding because the claim had stopped going through cos.readouts (2ccae98)
    real = mod.step_videos
    monkeypatch.setattr(mod, "step_videos", lambda system, res, row: real(system, res, row)[-1:].expand(
        len(res.steps), -1, -1, -1, -1))
    r = ctl.run(claim)
    assert r.status != "holds", (r.status, r.measured)


@dataclass
class DroppedNoiseAtStep(NoiseAtStep):
    """The injection dropped: the intervention is scheduled but leaves x_s alone."""

    def before_forward(self, ctx, latents):
        return latents


def test_noise_dropping_the_injection_breaks_information_flow(monkeypatch):
    """Noise family: NoiseAtStep scheduled but not applied."""
    import cos.readouts

    claim, ctl = positive("noise.information_flow")
    assert ctl.run(claim).status == "holds"
    monkeypatch.setitem(cos.readouts.STEP_READINGS, "step", DroppedNoiseAtStep)
    r = ctl.run(claim)
    assert r.status != "holds" and r.measured == pytest.approx(0, abs=1e-6), (r.status, r.measured)


def test_layers_reading_the_wrong_blocks_capture_breaks_swap_flip(monkeypatch):
    """Layers family: the alternative's update swapped in at block k is the one captured at another block
    (half the depth away), i.e. the measurement swaps the wrong block."""
    import cos.claims.swap_flip as mod
    from cos.interventions import CaptureBlocks

    class ShiftedCapture(CaptureBlocks):
        def get(self, step, block, cfg_pass="cond"):
            bs = sorted({b for _, b, _ in self.store})
            return super().get(step, bs[(bs.index(block) + len(bs) // 2) % len(bs)], cfg_pass)

    claim, ctl = positive("layers.swap_flip")
    assert ctl.run(claim).status == "holds"
    monkeypatch.setattr(mod, "CaptureBlocks", ShiftedCapture)
    r = ctl.run(claim)
    assert r.status != "holds", (r.status, r.measured, r.details.get("flip_rate_per_block"))


def test_ensemble_averaging_nothing_breaks_the_ensemble_claim(monkeypatch):
    """Ensemble family: the window's averaging scheduled but not applied."""
    import cos.claims.ensemble as mod
    from cos.interventions import EnsembleAverage

    class NoAverage(EnsembleAverage):
        def on_block(self, ctx, block, hidden):
            return None

    claim, ctl = positive("ensemble.mid_layers")
    assert ctl.run(claim).status == "holds"
    monkeypatch.setattr(mod, "EnsembleAverage", NoAverage)
    r = ctl.run(claim)
    assert r.status != "holds" and r.measured == pytest.approx(0, abs=1e-9), (r.status, r.measured)


def test_frames_scoring_the_single_frame_setting_at_every_count_breaks_frames(monkeypatch):
    """Frames family: every frame count silently read at the single-frame length (its records)."""
    from cos.claims.frames import FramesCount

    claim, ctl = positive("frames.count")
    assert ctl.run(claim).status == "holds"
    real = FramesCount._scores_at
    single = ctl.kwargs(0)["sizing"].single
    monkeypatch.setattr(FramesCount, "_scores_at",
                        staticmethod(lambda records, frames: real(records, single)))
    r = ctl.run(claim)
    assert r.status != "holds" and r.measured == pytest.approx(0, abs=1e-9), (r.status, r.measured)


def test_layers_swapping_whole_block_outputs_breaks_swap_flip(monkeypatch):
    """Layers family, version 1's reading: swap block k's whole output instead of its update. Every later block
    then recomputes from the alternative's stream (which carries the alternative's task), so every block flips
    and no middle depth stands out: the planted control must not hold."""
    import cos.claims.swap_flip as mod
    from cos.interventions import CaptureBlocks, SwapBlock

    class OutputCapture(CaptureBlocks):
        def __post_init__(self):
            self.what = "output"
            super().__post_init__()

    class OutputSwap(SwapBlock):
        def __post_init__(self):
            self.what = "output"
            super().__post_init__()

    claim, ctl = positive("layers.swap_flip")
    monkeypatch.setattr(mod, "CaptureBlocks", OutputCapture)
    monkeypatch.setattr(mod, "SwapBlock", OutputSwap)
    r = ctl.run(claim)
    assert r.status != "holds", (r.status, r.measured, r.details.get("flip_rate_per_block"))


def test_memory_reading_only_the_final_video_is_caught_by_the_lapse_null(monkeypatch):
    """A null that must catch a broken readout: the anchor lost mid-way and restored at the end is `fails` as
    written, and `holds` once memory reads the final video in place of x̂0 along the steps."""
    import cos.claims.memory as mod

    claim = get_claim("memory.persistence")
    null = next(c for c in claim.controls() if c.name == "lapse-mid-way")
    assert null.run(claim).status == "fails"
    real = mod.clean_batch_rows
    # the per-row readout sees the final video at every step in place of the x̂0 trajectory
    monkeypatch.setattr(mod, "clean_batch_rows", lambda ctx, system, settings, batch, read, tasks=None: real(
        ctx, system, settings, batch,
        lambda i, steps, final: read(i, final[None].expand(len(steps), -1, -1, -1, -1), final), tasks))
    assert null.run(claim).status == "holds"
