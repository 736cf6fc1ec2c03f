"""Loading Wan directories the tests write themselves; every bad input gives one line naming the path."""
import json

import pytest
import torch

from cos.errors import ModelLoadError
from cos.models import load_system, tiny_system
from cos.sampler import Sampler
from tests.helpers import tiny_conditioning


def write_wan_dir(root, two_experts=True, num_layers=2):
    s = tiny_system(two_experts=two_experts, num_layers=num_layers)
    s.transformer.save_pretrained(root / "transformer")
    if two_experts:
        s.transformer_2.save_pretrained(root / "transformer_2")
    s.vae.vae.save_pretrained(root / "vae")
    s.scheduler.save_pretrained(root / "scheduler")
    index = {"_class_name": "WanImageToVideoPipeline", "_diffusers_version": "0.42.1",
             "boundary_ratio": s.boundary_ratio if two_experts else None}
    (root / "model_index.json").write_text(json.dumps(index))
    return s


@pytest.fixture(scope="module")
def wan_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("wan")
    return root, write_wan_dir(root)


def test_loaded_system_samples_like_the_original(wan_dir):
    root, orig = wan_dir
    loaded = load_system(root)
    assert loaded.boundary_ratio == orig.boundary_ratio and loaded.transformer_2 is not None
    assert loaded.weights_hash and loaded.weights_hash == load_system(root).weights_hash
    cond = tiny_conditioning()
    a = Sampler(orig).sample(cond, [0], 3, guidance_scale=3.0).latents
    b = Sampler(loaded).sample(cond, [0], 3, guidance_scale=3.0).latents
    # same weights; diffusers' from_pretrained path differs from fresh init by float rounding (~5e-7 per forward)
    assert torch.allclose(a, b, atol=1e-4)
    assert torch.equal(b, Sampler(load_system(root)).sample(cond, [0], 3, guidance_scale=3.0).latents)


def copy_dir(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("breakage,message", [
    ("missing_path", "model path does not exist"),
    ("file", "is not a directory"),
    ("not_wan", "not a diffusers Wan directory"),
    ("truncated", "truncated safetensors file"),
    ("no_weights", "no .safetensors weights"),
    ("wrong_in_channels", "in_channels=20 but an I2V model with this VAE needs 36"),
    ("wrong_class", "_class_name is 'UNet2DModel'"),
    ("bad_json", "malformed JSON"),
    ("no_boundary", "two experts but no boundary_ratio"),
])
def test_bad_model_dirs_give_one_line_errors(wan_dir, tmp_path, breakage, message):
    root = copy_dir(wan_dir[0], tmp_path / "m")
    t = root / "transformer"
    if breakage == "missing_path":
        root = tmp_path / "nowhere"
    elif breakage == "file":
        root = root / "model_index.json"
    elif breakage == "not_wan":
        (root / "model_index.json").unlink()
    elif breakage == "truncated":
        w = t / "diffusion_pytorch_model.safetensors"
        w.write_bytes(w.read_bytes()[:-100])
    elif breakage == "no_weights":
        (t / "diffusion_pytorch_model.safetensors").unlink()
    elif breakage in ("wrong_in_channels", "wrong_class"):
        cfg = json.loads((t / "config.json").read_text())
        cfg.update({"in_channels": 20} if breakage == "wrong_in_channels" else {"_class_name": "UNet2DModel"})
        (t / "config.json").write_text(json.dumps(cfg))
    elif breakage == "bad_json":
        (t / "config.json").write_text("{oops")
    elif breakage == "no_boundary":
        (root / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    with pytest.raises(ModelLoadError) as e:
        load_system(root)
    msg = str(e.value)
    assert message in msg and "\n" not in msg
    assert str(root if breakage not in ("truncated", "no_weights", "wrong_in_channels", "wrong_class", "bad_json")
               else t) in msg
