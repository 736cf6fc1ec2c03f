"""Generating VBVR-Bench samples (cos.vbvr_run) with a tiny Wan system, and the claims on VBVR-Bench end to end.

Skipped where VBVR-EvalKit is not importable (its task table names the valid task folders)."""
import json
from dataclasses import replace
from fractions import Fraction

import pytest

from cos.errors import InputError
from cos.runner import RunContext
from cos.settings import ClaimSettings
from cos.store import ResultStore
from cos.tasks.vbvr import read_video, scorer_status, video_info
from cos.validation import validate_options
from cos.vbvr_run import VBVRConfig, extra_from_options, config_of, generate, items, round16, round4k1
from tests.helpers import write_wan_dir
from tests.test_vbvr_eval import BENCH

needs_evalkit = pytest.mark.skipif(scorer_status() is not None or not BENCH.is_dir(),
                                   reason=scorer_status() or f"no VBVR-Bench samples at {BENCH}")


def test_rounding():
    assert (round16(1024), round16(1000), round16(7)) == (1024, 1008, 16)
    assert (round4k1(24), round4k1(79), round4k1(81), round4k1(5)) == (25, 81, 81, 5)


def test_settings_carry_the_options(tmp_path):
    from cos.tasks import make_instance
    from cos.tasks.vbvr import export_tasks

    export_tasks(tmp_path, [make_instance("maze", 0, 5, "id")], 32, 32)   # extra_from_options checks the data
    s = replace(ClaimSettings(), extra={"vbvr": extra_from_options(str(tmp_path), "/o", 2, "32x48x5", None)})
    cfg = config_of(s)
    assert cfg == VBVRConfig(data=str(tmp_path), out="/o", steps=2, size=(32, 48, 5))
    assert (cfg.guidance_scale, cfg.flow_shift, cfg.seed) == (5.0, 5.0, 1)     # VBVR-Wan2.2's evaluation
    assert config_of(ClaimSettings()) is None


def test_cos_vbvr_option_is_validated(tmp_path):
    with pytest.raises(InputError, match="--cos-vbvr.*does not exist"):
        validate_options({"--cos-vbvr": str(tmp_path / "none")})
    with pytest.raises(InputError, match="--cos-vbvr.*no sample folders"):
        validate_options({"--cos-vbvr": str(tmp_path)})


@needs_evalkit
def test_unknown_task_folder_refused_by_the_option(tmp_path):
    (tmp_path / "In-Domain_50" / "maze" / "00000").mkdir(parents=True)
    with pytest.raises(InputError, match="--cos-vbvr.*unknown to VBVR-EvalKit"):
        validate_options({"--cos-vbvr": str(tmp_path)})
    validate_options({"--cos-vbvr": str(BENCH)})


@needs_evalkit
def test_items_take_the_samples_sizes():
    its = items(VBVRConfig(str(BENCH)))
    assert len(its) == 15
    for it in its:
        n, fps = video_info(it.dir / "ground_truth.mp4")
        assert (it.height, it.width, it.num_frames, it.fps) == (1024, 1024, round4k1(n), fps) and fps == Fraction(16)
    assert len({it.id for it in its}) == 15


@needs_evalkit
def test_generate_writes_the_layout_and_resumes_from_the_store(tmp_path, monkeypatch):
    from tests.helpers import tiny_system

    system = tiny_system()
    cfg = VBVRConfig(str(BENCH), out=str(tmp_path), steps=2, size=(32, 32, 5))
    ctx = RunContext(store=ResultStore(tmp_path / "store"), progress=False)
    root = generate(ctx, system, ClaimSettings(), cfg)
    files = sorted(root.glob("*/*/*.mp4"))
    assert len(files) == 15 and root == tmp_path / "vbvr-videos"
    assert read_video(files[0]).shape == (5, 3, 32, 32) and video_info(files[0])[1] == 16
    prov = json.loads((root / "generation.json").read_text())
    assert prov["steps"] == 2 and prov["flow_shift"] == 5.0 and prov["seed"] == 1 and prov["boundary_ratio"] == 0.875

    import cos.runner

    monkeypatch.setattr(cos.runner, "Sampler", None)   # a second run must be served from the store
    for f in files:
        f.unlink()
    generate(RunContext(store=ResultStore(tmp_path / "store"), progress=False), system, ClaimSettings(), cfg)
    assert len(sorted(root.glob("*/*/*.mp4"))) == 15


@needs_evalkit
@pytest.mark.slow
def test_claims_on_vbvr_bench_end_to_end(pytester, tmp_path):
    """The README's done-when check at a tiny size: bench.table1 and ensemble.mid_layers on the 15 samples."""
    model = tmp_path / "wan"
    write_wan_dir(model, num_layers=4)
    out = tmp_path / "out"
    pytester.makepyfile(test_entry="from cos.testing import test_claim  # noqa: F401")
    res = pytester.runpytest_subprocess(
        "-m", "claims", "-p", "no:cacheprovider", "--cos-model", str(model), "--cos-vbvr", str(BENCH),
        "--cos-size", "32x32x5", "--cos-steps", "2", "-k", "table1 or mid_layers", "--cos-out", str(out), timeout=2400)   # ~100 EvalKit evaluations of 1024² videos
    doc = json.loads((out / "claims-status.json").read_text())
    rows = {c["id"]: c for c in doc["claims"]}
    assert sorted(rows) == ["bench.table1", "ensemble.mid_layers"], res.stdout.str()[-3000:]
    assert all(r["status"] not in ("error", "skipped") for r in rows.values()), {k: r["reason"] for k, r in rows.items()}
    b, e = rows["bench.table1"]["details"], rows["ensemble.mid_layers"]["details"]
    assert b["vbvr"]["overall"]["n"] == 15 and set(b["baselines"]) == {"static", "ground_truth", "other_sample"}
    assert b["baselines"]["ground_truth"]["overall"] > b["baselines"]["static"]["overall"]
    assert "VBVR-Bench" in b["benchmark"] and "VBVR-Bench" in e["benchmark"] and len(e["vbvr_samples"]) == 15
    assert len(list((out / "vbvr-videos").glob("*/*/*.mp4"))) == 15
    assert len(list((out / "vbvr-videos-ensemble-mid").glob("*/*/*.mp4"))) == 15
