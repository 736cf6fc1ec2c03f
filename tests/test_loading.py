"""Loading Wan directories the tests write themselves; every bad input gives one line naming the path."""
import json

import pytest
import torch

from cos.errors import ModelLoadError
from cos.models import load_system
from cos.sampler import Sampler
from tests.helpers import tiny_conditioning, write_wan_dir


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


@pytest.fixture
def hash_cache(tmp_path, monkeypatch):
    from cos.models import identity

    monkeypatch.setenv("COS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(identity, "SMALL", 0)       # the fixtures' files are small: cache them anyway
    monkeypatch.setattr(identity, "_verified", {})
    return tmp_path / "cache"


def test_same_layout_different_weights_differ_and_the_hash_is_cached(wan_dir, tmp_path, hash_cache):
    from cos.models.identity import CACHE_NAME, weights_hash

    a, b = copy_dir(wan_dir[0], tmp_path / "a" / "m"), copy_dir(wan_dir[0], tmp_path / "b" / "m")
    assert weights_hash(a) == weights_hash(b)          # same bytes, same folder name: same identity
    f = b / "transformer" / "diffusion_pytorch_model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-4:] = bytes(4)                                # one weight changed: same header, layout and size
    f.write_bytes(bytes(raw))
    assert weights_hash(a) != weights_hash(b)
    assert len(json.loads((hash_cache / CACHE_NAME).read_text())) >= 2
    la, lb = load_system(a), load_system(b)
    assert la.weights_hash != lb.weights_hash and la.fingerprint != lb.fingerprint


def test_a_hub_blob_name_is_not_proof_of_content(tmp_path, hash_cache):
    import hashlib

    from cos.models.identity import file_sha256

    name = "ab" * 32
    (tmp_path / "blobs").mkdir()
    (tmp_path / "blobs" / name).write_bytes(b"not what the name says")
    (tmp_path / "snapshots").mkdir()
    (tmp_path / "snapshots" / "w.safetensors").symlink_to(tmp_path / "blobs" / name)
    got = file_sha256(tmp_path / "snapshots" / "w.safetensors")
    assert got != name and got == hashlib.sha256(b"not what the name says").hexdigest()


def test_fingerprint_follows_flow_shift_but_not_the_folder(wan_dir, tmp_path, hash_cache):
    root = wan_dir[0]
    base = load_system(root)
    shifted = load_system(root, flow_shift=5.0)
    assert base.weights_hash == shifted.weights_hash
    assert base.fingerprint != shifted.fingerprint
    assert load_system(root, flow_shift=5.0).fingerprint == shifted.fingerprint
    assert load_system(copy_dir(root, tmp_path / "elsewhere")).fingerprint == base.fingerprint
    assert load_system(root, dtype=torch.bfloat16).fingerprint != base.fingerprint


@pytest.mark.parametrize("content,message", [
    (b"this is a text file, not weights\n" * 4, "not a safetensors file (it starts with 'this is '"),
    (b"", "no header"),
])
def test_a_file_that_is_not_safetensors_is_named_so(tmp_path, content, message):
    from cos.models.files import check_safetensors

    f = tmp_path / "x.safetensors"
    f.write_bytes(content)
    with pytest.raises(ModelLoadError) as e:
        check_safetensors(f)
    assert message in str(e.value) and "\n" not in str(e.value) and "truncated safetensors (header" not in str(e.value)


def test_a_header_whose_shapes_do_not_match_its_offsets_is_refused(wan_dir, tmp_path):
    import struct

    root = copy_dir(wan_dir[0], tmp_path / "m")
    f = root / "transformer" / "diffusion_pytorch_model.safetensors"
    raw = f.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    k = next(k for k, v in header.items() if k != "__metadata__" and len(v["shape"]) == 2)
    header[k]["shape"] = header[k]["shape"][::-1] + [2]        # twice the elements, same byte range
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    f.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    with pytest.raises(ModelLoadError) as e:
        load_system(root)
    assert "data_offsets" in str(e.value) and k in str(e.value) and "\n" not in str(e.value)


def test_run_dtype_is_the_runs_and_what_cos_plan_loads(tmp_path, monkeypatch):
    """bf16 for a full model on a GPU, float32 for the organism and on a CPU: the run (the plugin's loads) and
    cos plan load in it (store keys hold the dtype: a float32 plan of a bf16 run found none of its entries)."""
    import torch

    from cos.models.loading import run_dtype

    (tmp_path / "org").mkdir()
    (tmp_path / "org" / "cos_model.json").write_text("{}")
    assert run_dtype(tmp_path / "full", "cuda") == torch.bfloat16 and run_dtype(tmp_path / "full", "cuda:1") == torch.bfloat16
    assert run_dtype(tmp_path / "full", "cpu") == torch.float32 and run_dtype(tmp_path / "org", "cuda") == torch.float32
