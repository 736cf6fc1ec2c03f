"""Training stays tested on the CPU: a few steps, a resume, a loadable model directory, an evaluation."""

import torch

from cos.evaluate import evaluate, summarize
from cos.models import load_system
from cos.train import train
from tests.helpers import small_cfg


def test_train_resume_load_and_evaluate(tmp_path):
    cfg = small_cfg()
    a = train(cfg, tmp_path / "run", device="cpu", steps=2)
    assert a["steps"] == 2 and a["final_loss"] > 0
    b = train(cfg, tmp_path / "run", device="cpu", steps=3)      # resumes from ckpt.pt, one more step
    assert b["steps"] == 3
    system = load_system(tmp_path / "run" / "model")
    assert system.encode_prompt(["complete the pattern"]).shape == (1, 12, 32)
    assert system.extra["defaults"]["num_frames"] == 9
    rows = evaluate(system, tasks=["pattern"], splits=("id",), n=2, steps=2, progress=False)
    assert len(rows) == 2 and all(0 <= r["score"] <= 1 for r in rows)
    assert summarize(rows)["all/all"]["n"] == 2


def test_training_is_deterministic_given_the_seed(tmp_path):
    cfg = small_cfg()
    train(cfg, tmp_path / "a", device="cpu", steps=2)
    train(cfg, tmp_path / "b", device="cpu", steps=2)
    sa = load_system(tmp_path / "a" / "model").transformer.state_dict()
    sb = load_system(tmp_path / "b" / "model").transformer.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_takes_a_list_of_frame_counts(tmp_path):
    """data.num_frames as a list: one count per batch, in turn; every count's pool is the render at that count;
    the model directory records the counts and keeps 9 as its sampling default."""
    from cos.evaluate import evaluate
    from cos.train import _gen, build_pools, frame_counts

    cfg = small_cfg()
    cfg["data"]["num_frames"] = [2, 5, 9]
    pools, prompts = build_pools(cfg["data"])
    assert sorted(pools) == [2, 5, 9] and pools[5].shape[1] == 5 and len(prompts) == pools[9].shape[0]
    for f in (2, 5):        # taken from the 9-frame render: equal to a render at that count
        for row, seed in ((0, 100000), (3, 100001)):        # pattern #0; maze #1 (2 instances a task)
            task = cfg["data"]["tasks"][row // 2]
            assert torch.equal(pools[f][row], torch.from_numpy(_gen((task, seed, "id", f, 16, 16))[0]))
    a = train(cfg, tmp_path / "run", device="cpu", steps=4)
    assert a["steps"] == 4 and a["steps_per_frame_count"] == {"2": 2, "5": 1, "9": 1}    # 2, 5, 9, 2
    assert set(a["final_loss_per_frame_count"]) == {"2", "5", "9"}
    system = load_system(tmp_path / "run" / "model")
    assert system.extra["defaults"]["num_frames"] == 9 and system.extra["trained_num_frames"] == [2, 5, 9]
    rows = evaluate(system, tasks=["pattern"], splits=("id",), n=2, steps=2, num_frames=5, progress=False)
    assert len(rows) == 2 and all(0 <= r["score"] <= 1 for r in rows)
    assert frame_counts({"num_frames": 9}) == [9]          # a single int keeps working


def test_a_run_can_start_from_a_trained_model(tmp_path):
    """train.init: a fresh run starts from a model directory's transformer and prompt table (a fine-tune)."""
    cfg = small_cfg()
    train(cfg, tmp_path / "a", device="cpu", steps=2)
    cfg["train"].update(init=str(tmp_path / "a" / "model"), lr=1e-12)     # a step that moves nothing measurable
    train(cfg, tmp_path / "b", device="cpu", steps=1)
    sa = load_system(tmp_path / "a" / "model").transformer.state_dict()
    sb = load_system(tmp_path / "b" / "model").transformer.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-6) for k in sa)
    cfg["model"]["num_layers"] = 3
    import pytest

    from cos.errors import CosError
    with pytest.raises(CosError, match="differs from the config's model"):
        train(cfg, tmp_path / "c", device="cpu", steps=1)
