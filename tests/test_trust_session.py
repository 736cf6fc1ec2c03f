"""Issue 28, the pytest session: a model or LoRA error is one line for the session (not one traceback per
claim) and writes nothing; an all-error table does not block the rerun; a failed final write says which file,
keeps what exists and fails the run; a run that selected nothing is not a success. pytester subprocesses."""
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cos.registry import SCHEMA

ROOT = Path(__file__).resolve().parent.parent
ORGANISM = ROOT / "fixtures" / "organism"

# two claims that need the model (they take cos_system), one that does not
TOY = '''
import pytest
from cos.registry import ClaimResult, decide

def make(cid, lo, hi):
    return ClaimResult.for_claim(cid, measured=(lo + hi) / 2, ci_low=lo, ci_high=hi, n=10,
                                 status=decide(lo, hi), model="toy", seeds=[0, 1])

@pytest.mark.claims
@pytest.mark.claim("cos.superposition")
def test_a(cos_claim, cos_system):
    cos_claim.report(make("cos.superposition", 0.1, 0.3))

@pytest.mark.claims
@pytest.mark.claim("noise.step_vs_frame")
def test_b(cos_claim, cos_system):
    cos_claim.report(make("noise.step_vs_frame", -0.3, -0.1))
'''

FULL_DISK = '''
import errno
import cos.reporting

def full(out, *a, **k):
    (out / "claims-status.json.tmp").write_text("{")        # a temporary half written, then the disk is full
    raise OSError(errno.ENOSPC, "No space left on device")

cos.reporting.write_status = full
'''


def run(pytester, *args):
    pytester.makepyfile(test_toy=TOY)
    return pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-device", "cpu",
                                         "--cos-out", str(pytester.path / "out"), *args)


def test_a_lora_that_changes_nothing_is_one_line_for_the_session(pytester, tmp_path):
    sd = load_file(ORGANISM / "distill" / "four_step_lora.safetensors")
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in sd.items()}, str(tmp_path / "z.safetensors"))
    res = run(pytester, "--cos-model-lora", f"{tmp_path / 'z.safetensors'}:1")
    text = res.stdout.str() + res.stderr.str()
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    errors = [line for line in text.splitlines() if "changes nothing" in line]
    assert len(errors) == 1 and "ERROR: loading" in errors[0] and str(tmp_path / "z.safetensors") in errors[0]
    assert "Traceback" not in text and "def test_" not in text          # no per-claim failure sections
    assert not (pytester.path / "out" / "claims-status.json").exists()


def test_an_all_error_table_does_not_block_the_rerun_and_a_real_one_does(pytester):
    out = pytester.path / "out"
    out.mkdir()
    (out / "claims-status.json").write_text(json.dumps({"schema": SCHEMA, "claims": [
        {"id": "cos.superposition", "status": "error"}, {"id": "noise.step_vs_frame", "status": "error"}]}))
    res = run(pytester)
    res.assert_outcomes(passed=2)
    doc = json.loads((out / "claims-status.json").read_text())
    assert {c["status"] for c in doc["claims"]} == {"holds", "fails"}
    res = run(pytester)                  # now a measured table: not refused, it moves to history (tests/test_runs.py)
    assert res.ret == 0
    kept = sorted((out / "history").iterdir())      # the all-error table (moved by the first rerun), then `doc`
    assert [json.loads((k / "claims-status.json").read_text())["claims"][0]["status"] for k in kept] == ["error", "holds"]
    assert json.loads((kept[1] / "claims-status.json").read_text()) == doc


def test_a_full_disk_at_the_final_write_names_the_file_and_keeps_what_exists(pytester):
    out = pytester.path / "out"
    out.mkdir()
    (out / "claims-status.md").write_text("earlier table")
    pytester.makeconftest(FULL_DISK)
    res = run(pytester, "--cos-overwrite")
    text = res.stdout.str()
    assert res.ret != 0
    line = [x for x in text.splitlines() if "not written" in x]
    assert len(line) == 1 and f"{out / 'claims-status.json'} not written (No space left on device)" in line[0]
    assert "cos.superposition" in text                          # the table is still printed
    assert (out / "claims-status.md").read_text() == "earlier table" and not list(out.glob("*.tmp"))
    assert "Traceback" not in text


def test_cos_run_selecting_nothing_is_a_nonzero_exit_with_one_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "cos.cli", "run", "--out", str(tmp_path / "o"), "-k", "nomatch_xyz"],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == pytest.ExitCode.NO_TESTS_COLLECTED
    lines = [x for x in res.stderr.splitlines() if x.startswith("cos run:")]
    assert len(lines) == 1 and "no claim selected" in lines[0]
