"""With no intervention the shared sampler reproduces WanImageToVideoPipeline bitwise (float32, CPU)."""
import pytest
import torch
from diffusers import WanImageToVideoPipeline

from cos.models import tiny_system
from cos.sampler import Sampler
from tests.helpers import tiny_conditioning


def pipeline_latents(system, cond, seeds, steps, gs, gs2=None):
    pipe = WanImageToVideoPipeline(tokenizer=None, text_encoder=None, vae=system.vae.vae, scheduler=system.scheduler,
                                   transformer=system.transformer, transformer_2=system.transformer_2,
                                   boundary_ratio=system.boundary_ratio)
    pipe.set_progress_bar_config(disable=True)
    gens = [torch.Generator("cpu").manual_seed(s) for s in seeds]
    c = cond.expand(len(seeds))
    # with a generator list the pipeline encodes one first frame once per generator
    return pipe(image=cond.image, prompt_embeds=c.prompt_embeds, negative_prompt_embeds=c.negative_prompt_embeds,
                height=cond.height, width=cond.width, num_frames=cond.num_frames, num_inference_steps=steps,
                guidance_scale=gs, guidance_scale_2=gs2, generator=gens, output_type="latent").frames


@pytest.mark.parametrize("two_experts,scheduler", [(True, "unipc"), (False, "unipc"), (True, "euler")])
def test_sampler_matches_pipeline_bitwise(two_experts, scheduler):
    system = tiny_system(two_experts=two_experts, scheduler=scheduler)
    cond = tiny_conditioning(batch=1)
    seeds = [3, 4]
    gs2 = 3.0 if two_experts else None
    ref = pipeline_latents(system, cond, seeds, steps=6, gs=5.0, gs2=gs2)
    out = Sampler(system).sample(cond, seeds, 6, guidance_scale=5.0, guidance_scale_2=gs2)
    assert out.latents.shape == ref.shape
    assert torch.equal(out.latents, ref)


def test_boundary_inside_schedule_uses_both_experts():
    system = tiny_system(two_experts=True, boundary_ratio=0.875)
    state = Sampler(system).prepare(tiny_conditioning(), [0], 6)
    experts = [system.expert_for(t) for t in state.scheduler.timesteps]
    assert 0 in experts and 1 in experts, experts


def test_same_seed_same_result_and_seed_offsets_are_per_sample():
    system = tiny_system(two_experts=False)
    cond = tiny_conditioning()
    s = Sampler(system)
    a = s.sample(cond, [7, 8], 3, guidance_scale=1.0).latents
    b = s.sample(cond, [7, 8], 3, guidance_scale=1.0).latents
    c = s.sample(cond, [8], 3, guidance_scale=1.0).latents
    assert torch.equal(a, b)
    # sample for seed 8 does not depend on what else is in the batch
    assert torch.allclose(a[1:], c, atol=1e-5)
    assert not torch.allclose(a[0], a[1])


def test_x0_record_matches_scheduler_x0_and_eq2():
    system = tiny_system(two_experts=False)
    sampler = Sampler(system)
    state = sampler.prepare(tiny_conditioning(), [1], 4)
    res = sampler.run(state, guidance_scale=1.0, record=("x0", "latents", "velocity"), until=1)
    # UniPC keeps its own x̂0 (convert_model_output) after step(); it must equal eq. 2
    assert torch.equal(res["x0"][0], state.scheduler.model_outputs[-1])
    assert torch.allclose(res["x0"][0], res["latents"][0] - res.sigmas[0] * res["velocity"][0])


def test_batched_cfg_close_to_separate_passes():
    system = tiny_system(two_experts=True)
    cond = tiny_conditioning()
    a = Sampler(system).sample(cond, [0, 1], 4, guidance_scale=4.0).latents
    b = Sampler(system, batch_cfg=True).sample(cond, [0, 1], 4, guidance_scale=4.0).latents
    assert torch.allclose(a, b, atol=1e-4)
