"""Every registered claim end to end on a tiny diffusers Wan directory (two experts, a real AutoencoderKLWan),
through the full-tier code path (guidance 5, result store, the full tier's sizings) at a tiny size: no claim may
error there. Statuses are meaningless on random weights; the wiring is what is checked."""
import json

from tests.helpers import write_wan_dir

TASKS = "grounding,return_to_origin,occlusion,maze,object_to_target"


def test_every_claim_runs_on_a_tiny_wan_directory_without_error(pytester, tmp_path):
    model = tmp_path / "wan"
    write_wan_dir(model, num_layers=8)          # deep enough for a middle and an outer swapped block
    out = tmp_path / "out"
    pytester.makepyfile(test_entry="from cos.testing import test_claim  # noqa: F401")
    res = pytester.runpytest_subprocess(
        "-m", "claims", "-p", "no:cacheprovider", "--cos-model", str(model), "--cos-tier", "full",
        "--cos-size", "64x64x5", "--cos-steps", "2", "--cos-instances", "2", "--cos-tasks", TASKS,
        "--cos-out", str(out), timeout=900)
    doc = json.loads((out / "claims-status.json").read_text())
    rows = {c["id"]: c for c in doc["claims"]}
    from cos.registry import all_claims

    assert sorted(rows) == sorted(c.id for c in all_claims()), res.stdout.str()[-3000:]
    errors = {k: r["reason"] for k, r in rows.items() if r["status"] == "error"}
    assert not errors, errors
    assert rows["distill.four_step"]["status"] == "skipped"     # no --cos-lora given
    assert (out / "cos-store").is_dir() and any((out / "cos-store").rglob("*"))    # the full tier stores runs
