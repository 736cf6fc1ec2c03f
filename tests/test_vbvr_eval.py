"""VBVR-Bench scoring (cos.vbvr_eval): the real VBVR-EvalKit on the 15 shared real-format samples.

The EvalKit tests skip where `vbvr_bench` is not importable (`pip install ../shared/vbvr/wheels/...`, see README).
Their reference is EvalKit's own `VBVRBench.evaluate(..., task_specific_only=True)`: `cos vbvr score` and the
ground-truth baseline of `cos vbvr baselines` must give exactly its numbers."""
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from cos.errors import InputError
from cos.tasks import make_instance
from cos.tasks.vbvr import export_tasks, read_samples, sample_dirs, scorer_status
from cos.vbvr_eval import SampleScore, cluster_ci

BENCH = Path(__file__).resolve().parents[2] / "shared" / "vbvr" / "bench"   # ../shared beside the checkout
needs_evalkit = pytest.mark.skipif(scorer_status() is not None or not BENCH.is_dir(),
                                   reason=scorer_status() or f"no VBVR-Bench samples at {BENCH}")


def gt_replay(dest: Path, data: Path = BENCH) -> Path:
    """Each sample's ground truth laid out as videos to score."""
    for d in sample_dirs(data):
        s, t, i = d.relative_to(data).parts
        (dest / s / t).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(d / "ground_truth.mp4", dest / s / t / f"{int(i):05d}.mp4")
    return dest


def test_hidden_folders_are_ignored(tmp_path):
    export_tasks(tmp_path, [make_instance("maze", 0, 5, "id")], 32, 32)
    (tmp_path / ".cache" / "huggingface" / "download").mkdir(parents=True)   # what a hub download leaves
    (tmp_path / "In-Domain_50" / ".git" / "x").mkdir(parents=True)
    assert [s.task for s in read_samples(tmp_path)] == ["maze"]


def test_cluster_ci_resamples_tasks():
    rng = np.random.default_rng(0)
    tasks = [f"t{k}" for k in range(6) for _ in range(5)]
    # tasks differ a lot, samples within a task hardly: the interval must reflect 6 units, not 30
    scores = [k / 5 + rng.normal(0, 0.01) for k in range(6) for _ in range(5)]
    clustered = cluster_ci(scores, tasks)
    naive = cluster_ci(scores, [str(i) for i in range(30)])
    assert clustered.value == pytest.approx(np.mean(scores))
    assert clustered.ci_high - clustered.ci_low > 1.5 * (naive.ci_high - naive.ci_low)
    assert not cluster_ci([0.5] * 6, list("aabbcc")).decidable       # no spread: no interval to decide on


@needs_evalkit
def test_unknown_task_is_a_one_line_error_before_scoring(tmp_path):
    from cos.vbvr_eval import score_videos

    (tmp_path / "In-Domain_50" / "maze").mkdir(parents=True)
    (tmp_path / "In-Domain_50" / "maze" / "00000.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="unknown to VBVR-EvalKit.*maze") as e:
        score_videos(BENCH, tmp_path)
    assert "\n" not in str(e.value)


@needs_evalkit
def test_evaluator_failure_is_an_error_not_a_silent_zero(tmp_path):
    from cos.vbvr_eval import aggregate, score_videos

    task = "O-30_bookshelf_data-generator"
    (tmp_path / "In-Domain_50" / task).mkdir(parents=True)
    (tmp_path / "In-Domain_50" / task / "00000.mp4").write_bytes(b"not a video")
    [r] = score_videos(BENCH, tmp_path)
    assert r.score is None and r.error, r
    agg = aggregate([r, SampleScore("In-Domain_50", task, "00001", 1.0)])
    assert agg["overall"]["errors"] == 1 and agg["overall"]["score"] == 0.5


@pytest.fixture(scope="module")
def direct(tmp_path_factory):
    """EvalKit's own evaluation of the ground truth replayed: {(split, task, idx): score}."""
    if scorer_status() is not None or not BENCH.is_dir():
        pytest.skip(scorer_status() or f"no VBVR-Bench samples at {BENCH}")
    from vbvr_bench import VBVRBench

    tmp = tmp_path_factory.mktemp("direct")
    res = VBVRBench(str(BENCH), str(tmp / "res"), device="cpu").evaluate(str(gt_replay(tmp / "gt")), name="gt",
                                                                        task_specific_only=True)
    split = {"In_Domain": "In-Domain_50", "Out_of_Domain": "Out-of-Domain_50"}
    return {(split[d["split"]], d["task_name"], d["video_idx"]): d["score"] for d in res["detailed"]}, res


@needs_evalkit
def test_cos_vbvr_score_equals_evalkit(direct, tmp_path, capsys):
    from cos.cli import main

    scores, res = direct
    assert main(["vbvr", "score", "--data", str(BENCH), "--videos", str(gt_replay(tmp_path / "gt")),
                 "--json", str(tmp_path / "s.json")]) == 0
    doc = json.loads((tmp_path / "s.json").read_text())
    assert {(s["split"], s["task"], s["idx"]): s["score"] for s in doc["samples"]} == scores
    assert doc["overall"]["score"] == pytest.approx(res["overall"]["mean_score"], abs=1e-12)
    assert doc["by_split"]["In-Domain_50"]["score"] == pytest.approx(res["In_Domain"]["mean_score"], abs=1e-12)
    assert doc["by_split"]["Out-of-Domain_50"]["score"] == pytest.approx(res["Out_of_Domain"]["mean_score"], abs=1e-12)
    o = doc["overall"]
    assert o["n"] == 15 and o["n_tasks"] == 5 and o["errors"] == 0 and o["ci_low"] <= o["score"] <= o["ci_high"]
    assert doc["provenance"]["split_mismatches"] == [] and "task-specific" in doc["provenance"]["score"]
    assert "overall 0.934" in capsys.readouterr().out


# the baselines' subset of the 15 samples: every task, three of them with two samples (the other sample's video, a
# wrong answer, is scored in both splits) and two with one, which have no other sample
SUBSET = {("In-Domain_50", "O-24_domino_chain_gap_analysis_data-generator"): ("00000",),
          ("In-Domain_50", "O-30_bookshelf_data-generator"): ("00000", "00001"),
          ("In-Domain_50", "O-47_sliding_puzzle_data-generator"): ("00000", "00001"),
          ("Out-of-Domain_50", "G-174_arrange_circles_by_circumference_data-generator"): ("00000", "00001"),
          ("Out-of-Domain_50", "O-59_symbol_insert_data-generator"): ("00000",)}


@needs_evalkit
def test_cos_vbvr_baselines(direct, tmp_path):
    """`cos vbvr baselines` end to end on 8 of the samples, every task (EvalKit takes ~4 s a video; all 15 samples'
    45 videos took ~4 min of the default test run): the replayed ground truth gets EvalKit's own numbers exactly,
    the static and the other sample's videos score below it on the samples both scored, with no evaluator error,
    and a task of one sample leaves its other-sample video unscored, listed."""
    from cos.cli import main

    data = tmp_path / "data"
    for (split, task), idxs in SUBSET.items():
        for i in idxs:
            (data / split / task / i).mkdir(parents=True)
            for f in (BENCH / split / task / i).iterdir():
                (data / split / task / i / f.name).symlink_to(f)
    scores, _ = direct
    assert main(["vbvr", "baselines", "--data", str(data), "--json", str(tmp_path / "b.json")]) == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert sorted(doc) == ["ground_truth", "other_sample", "static"]
    per = {k: {(s["split"], s["task"], s["idx"]): s["score"] for s in d["samples"]} for k, d in doc.items()}
    subset = {(split, task, i) for (split, task), idxs in SUBSET.items() for i in idxs}
    assert per["ground_truth"] == {k: v for k, v in scores.items() if k in subset}   # EvalKit's numbers exactly
    gt = per["ground_truth"]
    for name in ("static", "other_sample"):
        assert np.mean(list(per[name].values())) < np.mean([gt[k] for k in per[name]]), name
    assert all(d["overall"]["errors"] == 0 for d in doc.values())
    assert {k: d["overall"]["n"] for k, d in doc.items()} == {"ground_truth": 8, "static": 8, "other_sample": 6}
    assert {k[0] for k in per["other_sample"]} == {"In-Domain_50", "Out-of-Domain_50"}
    assert doc["other_sample"]["provenance"]["unscored_samples"] == [
        "In-Domain_50/O-24_domino_chain_gap_analysis_data-generator/00000",
        "Out-of-Domain_50/O-59_symbol_insert_data-generator/00000"]
