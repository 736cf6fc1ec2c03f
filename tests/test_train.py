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
