"""The 4-step distilled LoRA a model directory ships (cos.distill_train): trained on the CPU at a tiny size,
installed and declared in cos_model.json, loaded through the same loader; distill.four_step uses it when no
--cos-lora is given, and an explicit --cos-lora overrides it."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from cos.models import load_system
from cos.models.loading import shipped_distilled
from cos.pytest_plugin import DEFAULT_MODEL, distilled_loras
from tests.helpers import small_cfg

pytest.importorskip("peft", reason="LoRAs need peft (test extra)")


@pytest.fixture(scope="module")
def tiny_organism(tmp_path_factory):
    """A 2-block organism trained for one step, with a distilled LoRA trained for two and installed."""
    from cos.distill_train import distill, install
    from cos.train import train

    root = tmp_path_factory.mktemp("tiny-organism")
    train(small_cfg(), root / "run", device="cpu", steps=1)
    meta = distill(root / "run" / "model", root / "distill", device="cpu", steps=2, batch=4, pairs_per_task=2,
                   teacher_batch=8, bf16=False, progress=False, lr=1e-2)
    install(root / "run" / "model", root / "distill" / "four_step_lora.safetensors", meta)
    return root / "run" / "model", meta


class Opts:
    """A stand-in for pytest.Config: only the options distilled_loras reads."""

    def __init__(self, loras=()):
        self.loras = list(loras)

    def getoption(self, name):
        assert name == "--cos-lora"
        return self.loras


def test_distilled_lora_trains_installs_and_loads(tiny_organism):
    model, meta = tiny_organism
    assert meta["fast_steps"] == 4 and meta["pairs"] == 4 and meta["reload_max_abs_diff"] < 1e-3
    assert meta["fast_timesteps"][0] > meta["fast_timesteps"][-1] and len(meta["fast_sigmas"]) == 4
    decl = shipped_distilled(model)
    assert decl["steps"] == 4 and decl["guidance_scale"] == 1.0
    assert decl["loras"] == [(model / "distill" / "four_step_lora.safetensors", 1.0)]
    base, fast = load_system(model), load_system(model, loras=decl["loras"])
    x = torch.randn(1, 7, 9, 16, 16)
    e = base.encode_prompt(["complete the pattern"])
    v = lambda s: s.transformer(hidden_states=x, timestep=torch.tensor([999.0]), encoder_hidden_states=e,
                                return_dict=False)[0]
    assert not torch.allclose(v(base), v(fast), atol=1e-6)     # the adapter moves the velocity
    assert "four_step_lora@1" in fast.name and fast.weights_hash != base.weights_hash


def test_the_plugin_takes_the_shipped_lora_unless_one_is_given(tiny_organism, tmp_path):
    model, _ = tiny_organism
    assert distilled_loras(model, Opts()) == [(model / "distill" / "four_step_lora.safetensors", 1.0)]
    assert distilled_loras(model, Opts(["/x/reason.safetensors:0.5", "/x/dmd.safetensors"])) == \
        [(Path("/x/reason.safetensors"), 0.5), (Path("/x/dmd.safetensors"), 0.5)]      # explicit overrides
    (tmp_path / "bare").mkdir()
    assert distilled_loras(tmp_path / "bare", Opts()) == []           # a diffusers dir declares none: skip
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "distill" / "four_step_lora.safetensors").unlink()
    from cos.errors import ModelLoadError

    with pytest.raises(ModelLoadError, match="distilled LoRA declared in .* is missing"):
        shipped_distilled(broken)


def test_the_shipped_organism_declares_its_distilled_lora():
    """The organism in fixtures ships its 4-step LoRA at the claim's own schedule (4 steps, guidance 1)."""
    from cos.claims.distill import FAST_GUIDANCE, FAST_STEPS

    decl = shipped_distilled(DEFAULT_MODEL)
    assert decl is not None, "fixtures/organism/cos_model.json declares no distilled LoRA"
    assert decl["steps"] == FAST_STEPS and decl["guidance_scale"] == FAST_GUIDANCE
    assert all(p.is_file() and p.parent.parent == DEFAULT_MODEL for p, _ in decl["loras"])
    assert distilled_loras(DEFAULT_MODEL, Opts()) == decl["loras"]


CLAIM_TEST = "from cos.testing import test_claim  # noqa: F401\n"


def test_distill_claim_runs_on_the_shipped_lora_and_an_explicit_one_overrides(pytester, tiny_organism, tmp_path):
    """End to end through pytest: no --cos-lora → the model's own LoRA (the claim runs, not skipped); an explicit
    --cos-lora → that one (its name in the row's model)."""
    model, _ = tiny_organism
    pytester.makepyfile(test_claims=CLAIM_TEST)
    small = ["-m", "claims", "-k", "four_step", "-p", "no:cacheprovider", "--cos-model", str(model), "--cos-device",
             "cpu", "--cos-instances", "2", "--cos-tasks", "pattern", "--cos-steps", "2"]
    res = pytester.runpytest_subprocess(*small, "--cos-out", str(tmp_path / "a"))
    res.assert_outcomes(passed=1)
    row = json.loads((tmp_path / "a" / "claims-status.json").read_text())["claims"][0]
    assert row["id"] == "distill.four_step" and row["status"] != "skipped"
    assert row["details"]["fast_model"].endswith("+four_step_lora@1")
    other = tmp_path / "other.safetensors"
    shutil.copyfile(model / "distill" / "four_step_lora.safetensors", other)
    res = pytester.runpytest_subprocess(*small, "--cos-out", str(tmp_path / "b"), "--cos-lora", f"{other}:0.5")
    res.assert_outcomes(passed=1)
    row = json.loads((tmp_path / "b" / "claims-status.json").read_text())["claims"][0]
    assert row["details"]["fast_model"].endswith("+other@0.5")


def test_evaluate_takes_the_shipped_lora_and_a_frame_count(tiny_organism, tmp_path):
    """`cos evaluate --distilled` samples with the declared LoRA at its own steps and guidance; --frames sets the
    count; --distilled on a model that declares none is one line."""
    from cos.errors import InputError
    from cos.evaluate import main

    model, _ = tiny_organism
    main(["--model", str(model), "--n", "2", "--device", "cpu", "--distilled", "--json", str(tmp_path / "d.json")])
    d = json.loads((tmp_path / "d.json").read_text())
    assert d["settings"]["steps"] == 4 and d["settings"]["guidance_scale"] == 1.0
    assert d["model"].endswith("+four_step_lora@1") and len(d["loras"]) == 1
    main(["--model", str(model), "--n", "2", "--device", "cpu", "--frames", "5", "--steps", "1",
          "--json", str(tmp_path / "f.json")])
    assert json.loads((tmp_path / "f.json").read_text())["settings"]["num_frames"] == 5
    (tmp_path / "bare").mkdir()
    shutil.copytree(model, tmp_path / "bare" / "m", ignore=shutil.ignore_patterns("distill"))
    cfg = json.loads((tmp_path / "bare" / "m" / "cos_model.json").read_text())
    del cfg["distilled"]
    (tmp_path / "bare" / "m" / "cos_model.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="declares no distilled LoRA"):
        main(["--model", str(tmp_path / "bare" / "m"), "--n", "2", "--device", "cpu", "--distilled"])
