"""The full-model path on tiny random Wan directories the tests write: two experts, a tiny VAE, a tiny UMT5
text encoder with its tokenizer, LoRA stacking, scheduler override, offload, and the bad inputs."""
import json

import pytest
import torch
from safetensors.torch import save_file

from cos.errors import ModelLoadError
from cos.models import load_system
from cos.models.loading import _expert_bytes
from cos.models.lora import parse_lora_spec
from cos.sampler import Sampler
from tests.helpers import tiny_conditioning
from tests.helpers import write_wan_dir

transformers = pytest.importorskip("transformers", reason="the text encoder path needs transformers (test extra)")
pytest.importorskip("peft", reason="LoRA stacking needs peft (test extra)")

WORDS = ["<pad>", "</s>", "<unk>", "move", "the", "white", "square", "to", "red", "slot", "mark", "object"]


def write_text_encoder(root):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, UMT5Config, UMT5EncoderModel

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    fast.save_pretrained(root / "tokenizer")
    torch.manual_seed(0)
    cfg = UMT5Config(vocab_size=len(WORDS), d_model=32, d_kv=8, d_ff=64, num_layers=1, num_heads=2,
                     relative_attention_num_buckets=8)
    UMT5EncoderModel(cfg).save_pretrained(root / "text_encoder", safe_serialization=True)


@pytest.fixture(scope="module")
def full_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan-full")
    write_wan_dir(root)
    write_text_encoder(root)
    return root


def write_lora(path, model, seed, modules=("blocks.0.attn1.to_q", "blocks.1.ffn.net.2"), rank=2, scale=0.05):
    g = torch.Generator().manual_seed(seed)
    mods = dict(model.named_modules())
    sd = {}
    for name in modules:
        lin = mods[name]
        sd[f"transformer.{name}.lora_A.weight"] = torch.randn(rank, lin.in_features, generator=g) * scale
        sd[f"transformer.{name}.lora_B.weight"] = torch.randn(lin.out_features, rank, generator=g) * scale
    save_file(sd, str(path))
    return sd


def test_text_encoder_encodes_like_the_pipeline_and_can_be_released(full_dir):
    s = load_system(full_dir)
    emb = s.encode_prompt(["move the white square", "mark the red object"])
    assert emb.shape == (2, 512, 32)
    assert emb[0, 5:].abs().sum() == 0 and emb[0, :4].abs().sum() > 0     # 4 words + </s>: padding zeroed
    s.encode_prompt.release()
    assert torch.equal(s.encode_prompt(["move the white square"])[0], emb[0])   # served from the cache
    lat = Sampler(s).sample(tiny_conditioning(), [0], 2, guidance_scale=1.0).latents
    assert torch.isfinite(lat).all()


def test_lora_stack_equals_merging_the_weighted_deltas(full_dir, tmp_path):
    base = load_system(full_dir)
    a = write_lora(tmp_path / "reason.safetensors", base.transformer, 1)
    b = write_lora(tmp_path / "distill.safetensors", base.transformer, 2)
    stacked = load_system(full_dir, loras=[(tmp_path / "reason.safetensors", 0.5), (tmp_path / "distill.safetensors", 0.5)])
    merged = load_system(full_dir)
    for expert in merged.experts:
        mods = dict(expert.named_modules())
        for sd in (a, b):
            for k in [k for k in sd if "lora_A" in k]:
                name = k.removeprefix("transformer.").split(".lora_A")[0]
                delta = sd[k.replace("lora_A", "lora_B")] @ sd[k]
                mods[name].weight.data += 0.5 * delta
    cond = tiny_conditioning()
    out = lambda s: Sampler(s).sample(cond, [0], 3, guidance_scale=1.0).latents
    assert torch.allclose(out(stacked), out(merged), atol=1e-5)
    assert not torch.allclose(out(stacked), out(base), atol=1e-4)
    assert "reason@0.5" in stacked.name and stacked.weights_hash != base.weights_hash


def test_lora_for_another_architecture_is_one_line(full_dir, tmp_path):
    save_file({"transformer.down_blocks.0.proj.lora_A.weight": torch.zeros(2, 8),
               "transformer.down_blocks.0.proj.lora_B.weight": torch.zeros(8, 2)}, str(tmp_path / "unet.safetensors"))
    with pytest.raises(ModelLoadError, match="not a Linear layer of expert 0"):
        load_system(full_dir, loras=[(tmp_path / "unet.safetensors", 0.5)])
    with pytest.raises(ModelLoadError, match="LoRA path does not exist"):
        load_system(full_dir, loras=[(tmp_path / "nope.safetensors", 0.5)])


def test_wrong_size_lora_is_one_line(full_dir, tmp_path):
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 5120),
               "transformer.blocks.0.attn1.to_q.lora_B.weight": torch.zeros(24, 2)}, str(tmp_path / "big.safetensors"))
    with pytest.raises(ModelLoadError, match="expects 5120 input features"):
        load_system(full_dir, loras=[(tmp_path / "big.safetensors", 0.5)])


def test_missing_declared_expert_is_one_line(full_dir, tmp_path):
    import shutil

    root = shutil.copytree(full_dir, tmp_path / "m")
    idx = json.loads((root / "model_index.json").read_text())
    idx["transformer_2"] = ["diffusers", "WanTransformer3DModel"]
    (root / "model_index.json").write_text(json.dumps(idx))
    shutil.rmtree(root / "transformer_2")
    with pytest.raises(ModelLoadError, match="declares a second expert but the folder is missing"):
        load_system(root)


def test_flow_shift_override_and_offload(full_dir):
    s = load_system(full_dir, flow_shift=5.0, offload=True)
    assert s.scheduler.config.flow_shift == 5.0 and s.extra["flow_shift"] == 5.0
    assert s.offload and str(s.device) == "cpu"
    ref = load_system(full_dir, flow_shift=5.0)
    cond = tiny_conditioning()
    assert torch.equal(Sampler(s).sample(cond, [0], 3, guidance_scale=2.0).latents,
                       Sampler(ref).sample(cond, [0], 3, guidance_scale=2.0).latents)


def test_expert_bytes_come_from_headers(full_dir):
    s = load_system(full_dir)
    n = sum(p.numel() for p in s.transformer.parameters())
    assert _expert_bytes(full_dir, ["transformer"], torch.bfloat16) == 2 * n


def test_lora_spec_parsing():
    assert parse_lora_spec("/m/a.safetensors:0.25")[1] == 0.25
    assert parse_lora_spec("/m/a.safetensors")[1] == 0.5
    assert str(parse_lora_spec("C:/m/a.safetensors")[0]) == "C:/m/a.safetensors"
