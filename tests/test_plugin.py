"""The pytest plugin end to end (pytester, subprocess): toy claims under -n 2, the table, the JSON, gating."""
import json
from pathlib import Path

import pytest

from cos.pytest_plugin import assign_worker_gpu, gpu_shared_by, place_process, shared_gpu_note

TOY = '''
import pytest
from cos.registry import ClaimResult, decide

def make(cid, lo, hi):
    return ClaimResult.for_claim(cid, measured=(lo + hi) / 2, ci_low=lo, ci_high=hi, n=10,
                                 status=decide(lo, hi), model="toy", seeds=[0, 1])

@pytest.mark.claims
@pytest.mark.claim("cos.superposition")
def test_holds(cos_claim):
    cos_claim.report(make("cos.superposition", 0.1, 0.3))

@pytest.mark.claims
@pytest.mark.claim("noise.step_vs_frame")
def test_fails(cos_claim):
    cos_claim.report(make("noise.step_vs_frame", -0.3, -0.1))

@pytest.mark.claims
@pytest.mark.claim("layers.swap_flip")
def test_inconclusive(cos_claim):
    cos_claim.report(make("layers.swap_flip", -0.1, 0.2))

@pytest.mark.claims
@pytest.mark.claim("bench.table1")
def test_skipped(cos_claim):
    pytest.skip("no VBVR-Bench data given")

@pytest.mark.claims
@pytest.mark.claim("memory.persistence")
def test_error(cos_claim):
    from cos.errors import NonFiniteTrajectoryError
    raise NonFiniteTrajectoryError(7, "latents", [0])
'''


def run(pytester, *args):
    pytester.makepyfile(test_toy=TOY)
    return pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-out", str(pytester.path),
                                         "--cos-overwrite", *args)


@pytest.mark.parametrize("xdist", [[], ["-n", "2"]], ids=["serial", "xdist2"])
def test_table_and_json(pytester, xdist):
    res = run(pytester, *xdist)
    res.assert_outcomes(passed=3, skipped=1, failed=1)
    out = res.stdout.str()
    assert "claims status" in out and "cos.superposition" in out
    doc = json.loads((pytester.path / "claims-status.json").read_text())
    rows = {c["id"]: c for c in doc["claims"]}
    assert {k: v["status"] for k, v in rows.items()} == {
        "cos.superposition": "holds", "noise.step_vs_frame": "fails", "layers.swap_flip": "inconclusive",
        "bench.table1": "skipped", "memory.persistence": "error"}
    for c in doc["claims"]:
        assert set(c) >= {"id", "title", "paper_ref", "paper_value", "measured", "ci_low", "ci_high", "n", "status",
                          "reason", "model", "seeds", "runtime_s"}
    assert rows["bench.table1"]["reason"] == "no VBVR-Bench data given"
    assert "step 7" in rows["memory.persistence"]["reason"]
    assert rows["cos.superposition"]["seeds"] == [0, 1] and rows["cos.superposition"]["runtime_s"] >= 0
    prov = doc["provenance"]
    assert set(prov) >= {"packages", "torch", "cuda", "device_name", "git_commit", "model", "weights_hash",
                         "command", "start_time"}
    assert "holds" in (pytester.path / "claims-status.md").read_text()


def test_baseline_gating(pytester):
    from cos.registry import get_claim

    row = lambda cid, st: {"id": cid, "status": st, "version": get_claim(cid).spec.version}
    base = {"claims": [row("noise.step_vs_frame", "holds"), row("layers.swap_flip", "fails"),
                       row("cos.superposition", "holds")]}
    (pytester.path / "base.json").write_text(json.dumps(base))
    res = run(pytester, "--cos-baseline", str(pytester.path / "base.json"))
    assert res.ret == 1
    out = res.stdout.str()
    assert "REGRESSED against baseline (run fails): noise.step_vs_frame" in out
    doc = json.loads((pytester.path / "claims-status.json").read_text())
    assert doc["comparison"]["regressed"] == ["noise.step_vs_frame"]
    # the same regression against a baseline of another definition (version) is a changed definition, not a fail
    old = {"claims": [{**row("noise.step_vs_frame", "holds"), "version": 0}]}
    (pytester.path / "old.json").write_text(json.dumps(old))
    res = run(pytester, "--cos-baseline", str(pytester.path / "old.json"))
    doc = json.loads((pytester.path / "claims-status.json").read_text())
    assert doc["comparison"]["regressed"] == [] and doc["comparison"]["changed_definition"] == ["noise.step_vs_frame"]
    # a baseline whose held claims all still hold passes
    (pytester.path / "ok.json").write_text(json.dumps({"claims": [row("cos.superposition", "holds")]}))
    pytester.makepyfile(test_toy=TOY.replace("def test_error", "def _test_error"))
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-out", str(pytester.path),
                                        "--cos-overwrite", "--cos-baseline", str(pytester.path / "ok.json"))
    assert res.ret == 0, res.stdout.str()


def test_malformed_baseline_is_one_line(pytester):
    (pytester.path / "bad.json").write_text("{not json")
    res = run(pytester, "--cos-baseline", str(pytester.path / "bad.json"))
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "bad.json: malformed JSON" in res.stderr.str()


def test_markers_registered_and_strict(pytester):
    pytester.makepyfile(test_m="import pytest\n@pytest.mark.nonsense\ndef test_x(): pass\n")
    res = pytester.runpytest_subprocess("--strict-markers", "-p", "no:cacheprovider")
    assert "'nonsense' not found in `markers`" in res.stdout.str()
    res = pytester.runpytest_subprocess("--markers")
    for m in ("claims", "gpu", "full_model", "slow"):
        assert f"@pytest.mark.{m}:" in res.stdout.str()


def test_worker_gpu_assignment_indexes_callers_list():
    assert assign_worker_gpu("gw0", ["4", "6"]) == "4"
    assert assign_worker_gpu("gw3", ["4", "6"]) == "6"
    assert assign_worker_gpu(None, ["4"]) is None
    assert assign_worker_gpu("gw1", []) is None


def test_a_launch_says_when_its_processes_share_a_gpu():
    # local rank r takes GPU r mod G (assign_worker_gpu): the processes given the same GPU as this one
    assert [gpu_shared_by(r, 4, 1) for r in range(4)] == [4, 4, 4, 4]
    assert [gpu_shared_by(r, 3, 2) for r in range(3)] == [2, 1, 2]
    assert gpu_shared_by(0, 8, 8) == 1 and gpu_shared_by(0, 2, 0) == 1
    assert shared_gpu_note(1) == ""
    assert "up to 4 processes of this launch are given the same visible GPU" in shared_gpu_note(4)
    assert "procs-h100" in shared_gpu_note(4)


def test_a_process_is_placed_on_its_gpu_and_told_who_shares_it():
    from cos.parallel import LaunchEnv

    def launch(local_rank, local_size):
        return LaunchEnv(local_rank, local_size, local_rank, local_size, 60.0, 60.0)

    asked = []

    def visible():
        asked.append(1)
        return ["3", "5"]

    assert place_process("auto", launch(2, 4), None, visible) == ("3", 2)        # ranks 0 and 2 on GPU 3
    assert place_process("cuda", launch(1, 3), None, visible) == ("5", 1)        # rank 1 alone on GPU 5
    assert place_process("auto", launch(0, 4), None, lambda: ["0"]) == ("0", 4)
    assert place_process("cuda:1", launch(0, 4), None, visible) == (None, 4)     # all four on the named GPU
    assert place_process("auto", None, "gw3", visible) == ("5", 1)               # xdist: a worker, no launch
    asked.clear()
    assert place_process("cpu", launch(0, 4), None, visible) == (None, 1) and not asked
    assert place_process("auto", None, None, visible) == (None, 1) and not asked  # alone: nvidia-smi not asked
    assert place_process("auto", launch(0, 2), None, lambda: []) == (None, 1)    # no GPU visible


def test_a_gpu_list_that_repeats_an_ordinal_is_refused_in_one_line(pytester, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,0")
    pytester.makepyfile(test_toy=TOY)
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "-k", "holds")
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert "CUDA_VISIBLE_DEVICES=0,0 repeats a GPU" in res.stderr.str()
    # ... only where claims run: another project's tests are not cos's business (the plugin stays inert)
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "test_x.py")
    assert res.ret == 0, res.stdout.str()


def test_claim_tests_carry_the_markers_of_the_models_tier(pytester, tmp_path):
    pytester.makepyfile(test_toy=TOY)
    # a diffusers directory (no cos_model.json) means the full tier: -m "claims and full_model" selects them
    # (a real tiny one: --cos-model is validated, configs and weight headers, before any test)
    from tests.helpers import write_wan_dir

    (tmp_path / "m").mkdir()
    write_wan_dir(tmp_path / "m")
    res = pytester.runpytest_subprocess("-m", "claims and full_model", "--cos-model", str(tmp_path / "m"),
                                        "--cos-out", str(tmp_path / "o"), "-p", "no:cacheprovider")
    res.assert_outcomes(passed=3, skipped=1, errors=0, failed=1)
    res = pytester.runpytest_subprocess("-m", "claims and full_model", "--cos-out", str(tmp_path / "o2"),
                                        "-p", "no:cacheprovider", "--cos-device", "cpu")
    res.assert_outcomes()   # the organism on a CPU is the cpu tier: nothing carries full_model


class _Config:
    """The options `make_run_context` reads, as pytest's config hands them over."""

    def __init__(self, out, **options):
        self.options = {"--cos-shard": None, "--cos-store": None, "--cos-out": str(out), "--cos-tier": "gpu",
                        "--cos-store-key": None, "--cos-report-instances": 2, "--cos-sequential": "auto",
                        "--cos-against": None, "--cos-overlap": "off", "--cos-looks": None, "--cos-model": None,
                        "--cos-device": "cpu", **options}

    def getoption(self, name):
        return self.options[name]


def test_cos_looks_reaches_the_run_context_or_is_refused(tmp_path):
    """--cos-looks K is the session's RunContext.looks (the runner's and the ETA's); without it, 3. Where the run
    decides at fixed n it is refused in one line instead of ignored: the cpu tier's auto (a gate's too), off, and a
    gate against a run folder by auto. A gate against a model directory at the gpu tier takes looks by auto, as any
    run there (its sequential stop is calibrated on the planted models: docs/gate.md)."""
    from cos.pytest_plugin import make_run_context

    ctx = make_run_context(_Config(tmp_path, **{"--cos-looks": "5"}))
    assert ctx.sequential and ctx.looks == 5
    assert make_run_context(_Config(tmp_path)).looks == 3
    with pytest.raises(pytest.UsageError, match="only with sequential decisions"):
        make_run_context(_Config(tmp_path, **{"--cos-looks": "5", "--cos-tier": "cpu"}))
    with pytest.raises(pytest.UsageError, match="auto is off at the cpu tier"):
        make_run_context(_Config(tmp_path, **{"--cos-looks": "5", "--cos-against": str(tmp_path), "--cos-tier": "cpu"}))
    gate = make_run_context(_Config(tmp_path, **{"--cos-looks": "5", "--cos-against": str(tmp_path)}))
    assert gate.sequential and gate.looks == 5
    assert not make_run_context(_Config(tmp_path, **{"--cos-against": str(tmp_path), "--cos-sequential": "off"})).sequential
    # against a run folder (its records.jsonl) auto stays at fixed n: a CI's next baseline keeps all its rows
    folder = tmp_path / "accepted"
    folder.mkdir()
    (folder / "records.jsonl").write_text("")
    assert not make_run_context(_Config(tmp_path, **{"--cos-against": str(folder)})).sequential
    assert make_run_context(_Config(tmp_path, **{"--cos-against": str(folder), "--cos-sequential": "on"})).sequential
    with pytest.raises(pytest.UsageError, match="a gate against a run folder takes looks only with --cos-sequential on"):
        make_run_context(_Config(tmp_path, **{"--cos-looks": "4", "--cos-against": str(folder)}))
    with pytest.raises(pytest.UsageError, match=r"\(--cos-sequential off\)"):
        make_run_context(_Config(tmp_path, **{"--cos-looks": "4", "--cos-sequential": "off"}))


SHARED = '''
import os
import numpy as np
import pytest
import torch
from cos.registry import ClaimResult

CLAIMS = ["cos.superposition", "memory.persistence", "bench.table1", "cos.not_frames", "noise.information_flow",
          "noise.step_vs_frame", "frames.count", "layers.swap_flip", "ensemble.mid_layers"]

@pytest.mark.claims
@pytest.mark.parametrize("cid", [pytest.param(c, marks=pytest.mark.claim(c), id=c) for c in CLAIMS])
def test_claim(cos_claim, cid):
    # a numpy float in the row: execnet carries only exact builtins to the controller
    cos_claim.report(ClaimResult.for_claim(
        cid, measured=np.float64(0.5), ci_low=0.1, ci_high=0.9, n=10, status="holds", model="toy", seeds=[0],
        details={"worker": os.environ["PYTEST_XDIST_WORKER"], "threads": torch.get_num_threads(),
                 "omp": os.environ.get("OMP_NUM_THREADS"), "ci": [np.float64(0.25), np.float32(0.75)]},
        samples=[{"instance": "maze/0", "score": np.float32(0.5)}], records={"claim": cid, "rows": [{"v": np.float64(0.125)}]}))
'''


def test_claims_reading_a_shared_run_share_an_xdist_worker(pytester, monkeypatch):
    """`-n 2 --dist loadgroup`: the claims that read the clean run go to one worker, those that read the noise
    sweep to one (`shared_run_groups`; xdist's own loadgroup cannot see a mark under pytest 9.2), each worker takes
    half the cores for torch, and a row with numpy scalars reaches the controller."""
    import os

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)    # set for this test run's own workers: it would rule
    pytester.makepyfile(test_shared=SHARED)
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-out", str(pytester.path),
                                        "-n", "2", "--dist", "loadgroup", "-v")
    res.assert_outcomes(passed=9)
    assert "scheduling tests via SharedRunScheduling" in res.stdout.str()
    rows = {c["id"]: c for c in json.loads((pytester.path / "claims-status.json").read_text())["claims"]}
    worker = {k: v["details"]["worker"] for k, v in rows.items()}
    clean = {worker[c] for c in ("cos.superposition", "memory.persistence", "bench.table1", "cos.not_frames")}
    assert len(clean) == 1 and len({worker["noise.information_flow"], worker["noise.step_vs_frame"]}) == 1
    assert len(set(worker.values())) == 2       # both workers had claims: the rest are shared out
    cores = len(os.sched_getaffinity(0))
    share = max(1, cores // 2)
    assert {(v["details"]["threads"], v["details"]["omp"]) for v in rows.values()} == {(share, str(share))}
    samples = [json.loads(line) for line in (pytester.path / "samples.jsonl").read_text().splitlines()]
    assert {s["score"] for s in samples if s.get("instance") == "maze/0"} == {0.5}
    records = [json.loads(line) for line in (pytester.path / "records.jsonl").read_text().splitlines()]
    assert len(records) == 9 and all(r["rows"] == [{"v": 0.125}] for r in records)
    assert rows["frames.count"]["measured"] == 0.5 and rows["frames.count"]["details"]["ci"] == [0.25, 0.75]


def test_shared_run_groups_name_the_runs_claims_read():
    from cos.pytest_plugin import shared_run_groups

    class Config:
        def __init__(self, **o):
            self.o = {"--cos-tier": "cpu", "--cos-vbvr": None, **o}

        def getoption(self, name):
            return self.o[name]

    clean = {"bench.table1", "cos.not_frames", "cos.superposition", "distill.four_step", "memory.persistence",
             "perception.before_action", "selfcorrection.rate"}
    expected = {**dict.fromkeys(clean, "clean run"), **dict.fromkeys(
        ("noise.information_flow", "noise.step_vs_frame"), "noise sweep")}
    for tier in ("cpu", "gpu", "full"):
        assert shared_run_groups(Config(**{"--cos-tier": tier})) == expected
    # on VBVR-Bench, bench.table1 samples its own runs
    vbvr = shared_run_groups(Config(**{"--cos-vbvr": "/data/vbvr"}))
    assert "bench.table1" not in vbvr and vbvr["cos.not_frames"] == "clean run"


def test_an_xdist_worker_takes_its_share_of_the_cores(monkeypatch):
    from cos.pytest_plugin import xdist_share

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "3")
    assert xdist_share("gw1") == 3
    assert xdist_share(None) is None                            # not a worker (the controller, or no xdist)
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert xdist_share("gw1") is None                           # one's own setting rules
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "x")
    assert xdist_share("gw1") is None


def test_plain_rebuilds_a_row_from_builtins():
    import collections

    import execnet.gateway_base as wire
    import numpy as np

    from cos.pytest_plugin import plain

    Pair = collections.namedtuple("Pair", "a b")
    from pathlib import Path

    row = {"m": np.float64(1.5), "ci": [np.float32(0.25), np.int64(3)], "flag": np.bool_(True),
           "pair": Pair(1, np.float64(2.0)), np.str_("key"): None, "s": "x", "b": b"\x00",
           "arr": np.arange(3), "set": {np.int64(4)}, "path": Path("/a/b")}
    with pytest.raises(wire.DumpError):
        wire.dumps(row)
    out = plain(row)
    assert out == {"m": 1.5, "ci": [0.25, 3], "flag": True, "pair": (1, 2.0), "key": None, "s": "x", "b": b"\x00",
                   "arr": [0, 1, 2], "set": {4}, "path": "/a/b"}
    assert wire.loads(wire.dumps(out)) == out
    assert type(out["flag"]) is bool and type(out["ci"][1]) is int and type(out["pair"]) is tuple


ETA_XDIST = '''
import json
import os
import time
from pathlib import Path
import pytest
from cos.registry import ClaimResult

CLAIMS = ["cos.superposition", "bench.table1", "frames.count", "layers.energy_profile", "memory.persistence"]

@pytest.mark.claims
@pytest.mark.parametrize("cid", [pytest.param(c, marks=pytest.mark.claim(c), id=c) for c in CLAIMS])
def test_claim(cos_claim, cos_settings, cos_run, cid, request):
    if cid == "memory.persistence":
        pytest.skip("a claim its worker skips")
    t = cos_run.tracker        # the worker's estimate (--cos-budget makes the cpu tier plan): two units
    t.started(cid, 2, [1, 2])
    for k in (1, 2):
        time.sleep(0.3)
        t.progress(cid, k)
        if cid == "frames.count":       # stops at its first look
            t.finished(cid, 1)
            break
    # each batch's progress left where the controller reads it
    folder = request.config.workerinput["cos_progress_dir"]
    (request.config.rootpath / "progress_dir.txt").write_text(folder)
    mine = Path(folder) / (os.environ["PYTEST_XDIST_WORKER"] + ".json")
    assert json.loads(mine.read_text())[cid][:2] == ([0.5, 2] if cid == "frames.count" else [1.0, 2])
    cos_claim.report(ClaimResult.for_claim(cid, measured=0.5, ci_low=0.1, ci_high=0.9, n=10, status="holds",
                                           model="toy", seeds=[0]))
'''


def test_the_xdist_controller_shows_an_eta_from_its_workers_plan(pytester):
    """Under xdist a worker's ETA line never reached the terminal: the controller now takes the first worker's plan
    (its first claim's setup report) and each claim's progress (its teardown report), says the plan, and
    re-estimates as claims finish; the provenance keeps the trace."""
    pytester.makepyfile(test_eta=ETA_XDIST)
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-out", str(pytester.path),
                                        "--cos-device", "cpu", "--cos-instances", "1", "--cos-budget", "100",
                                        "-n", "2", "--dist", "loadgroup", "--junitxml", str(pytester.path / "j.xml"))
    res.assert_outcomes(passed=4, skipped=1)
    out = res.stdout.str()
    (plan,) = [x for x in out.splitlines() if "priced by xdist worker gw" in x]
    assert "2 workers share them" in plan
    done = [x for x in out.splitlines() if " claims done · run: " in x]
    assert done and "5 of 5 claims done · run: 100%" in done[-1], done
    prov = json.loads((pytester.path / "claims-status.json").read_text())["provenance"]
    x = prov["eta_xdist"]
    assert x["workers"] == 2 and x["priced_by"] in ("gw0", "gw1") and x["one_process_eta_s"] > 0
    assert prov["eta_s"] is None        # no ETA line: the plan's price was one process's, not this run's
    est = prov["eta_estimates"]
    assert len(est["trace"]) >= 1
    told = {e[1]: e[2:] for e in est["events"]}     # per claim, as its worker told it: units done, its units
    assert told == {"cos.superposition": [2, 2], "bench.table1": [2, 2], "layers.energy_profile": [2, 2],
                    "frames.count": [1, 2], "memory.persistence": [0, 0]}
    used = {k: c["used_fraction"] for k, c in est["claims"].items()}
    assert used["frames.count"] == 0.5 and used["bench.table1"] == 1.0 and used["memory.persistence"] == 0.0
    assert "cos_plan" not in (pytester.path / "j.xml").read_text()      # junit gets neither payload
    assert "cos_claim_work" not in (pytester.path / "j.xml").read_text()
    assert "xdist workers took" in out
    folder = Path((pytester.path / "progress_dir.txt").read_text())
    assert folder.name.startswith("cos-xdist-progress-") and not folder.exists(), "the progress folder was left behind"


def test_the_controller_counts_the_workers_claims_in_progress(tmp_path):
    """What the workers' progress files say (`progress_writer_to`, one per worker; a torn or foreign file is
    skipped) moves the controller's claims still running, never a finished one, never backwards."""
    from types import SimpleNamespace

    from cos.eta import ClaimWork, RunEstimate
    from cos.pytest_plugin import _PROGRESS_DIR, CosSession, progress_writer_to, read_progress

    def plan():
        return {k: ClaimWork(k, 10.0, {}, [(0.5, 0.5), (1.0, 0.5)]) for k in ("a", "b", "c")}

    w0, w1 = RunEstimate(plan(), t0=0.0, start=0.0), RunEstimate(plan(), t0=0.0, start=0.0)
    w0.listener, w1.listener = progress_writer_to(tmp_path / "gw0.json"), progress_writer_to(tmp_path / "gw1.json")
    w0.started("a", 4, [2, 4])
    w0.progress("a", 3)
    w1.started("b", 2, [1, 2])
    w1.progress("b", 1)
    (tmp_path / "gw2.json").write_text('{"a": [1.0')          # torn: skipped
    (tmp_path / "gw3.json").write_text('[1, 2]')              # not a worker's file: skipped
    (tmp_path / "gw4.json").write_text('{"c": [1.0, 2], "d": 3}')     # entries of another shape: skipped
    looks = [[0.5, 0.5], [1.0, 0.5]]
    assert read_progress(tmp_path) == {"a": [0.75, 4, looks, False], "b": [0.5, 2, looks, False]}
    ctl = SimpleNamespace(config=SimpleNamespace(stash={_PROGRESS_DIR: str(tmp_path)}),
                          tracker=RunEstimate(plan(), t0=0.0, start=0.0))
    ctl.tracker.claims["b"].finished, ctl.tracker.claims["b"].done = True, 0.25
    ctl.tracker.claims["a"].done = 0.9                              # told more already: kept
    CosSession._workers_progress(ctl)
    a, b, c = (ctl.tracker.claims[k] for k in "abc")
    assert (a.units, a.done) == (4, 0.9) and (b.done, b.units) == (0.25, None) and (c.done, c.units) == (0.0, None)
    ctl.tracker.claims["a"].done = 0.0
    CosSession._workers_progress(ctl)
    assert ctl.tracker.claims["a"].done == 0.75


def test_a_claim_ending_reads_the_other_workers_progress(tmp_path):
    """The wiring: when a claim's end reaches the controller (`_worker_claim_done`), the claims still running on
    other workers count as far as their progress files say; one a worker finished (its report not in yet) is
    expected to need nothing more; a done fraction is clamped to 1."""
    from types import SimpleNamespace

    from cos.eta import ClaimWork, RunEstimate
    from cos.pytest_plugin import _PROGRESS_DIR, CosSession

    plan = {k: ClaimWork(k, 10.0, {}, [(0.5, 0.5), (1.0, 0.5)]) for k in ("a", "b", "c")}
    said: list[str] = []
    ctl = SimpleNamespace(config=SimpleNamespace(stash={_PROGRESS_DIR: str(tmp_path)}), say=said.append,
                          tracker=RunEstimate(plan, t0=0.0, start=0.0), _xdist_workers={"gw1"})
    ctl.tracker.warm = (0.0, 0.0)
    ctl._workers_progress = lambda: CosSession._workers_progress(ctl)
    ctl._waiting_workers = lambda: CosSession._waiting_workers(ctl)
    (tmp_path / "gw1.json").write_text(json.dumps({"b": [0.5, 2, [[0.5, 0.5], [1.0, 0.5]], False],
                                                   "c": [3.0, 4, [[0.5, 0.5], [1.0, 0.5]], True]}))
    CosSession._worker_claim_done(ctl, "a", {"done": 1.0, "units": 2, "stops": [[0.5, 0.5], [1.0, 0.5]]})
    a, b, c = (ctl.tracker.claims[k] for k in "abc")
    assert a.finished and (b.done, b.units) == (0.5, 2) and not b.finished
    assert (c.done, c.units, c.stops) == (1.0, 4, [(1.0, 1.0)])
    assert said and said[-1].startswith("[cos] 1 of 3 claims done")


def test_no_xdist_eta_while_a_worker_has_left_no_progress(tmp_path):
    """A worker's batch in flight counts nothing: while a worker that started a claim (its plan arrived) has left
    no progress, the controller says how far the run got and whom the ETA waits for, and records no re-estimate.
    Through the report hook: every plan notes its worker (not one on another host, which leaves no progress); the
    sender of a claim's end is waited for no more; a worker that is down neither; no folder, no wait."""
    import shutil
    import types
    from types import SimpleNamespace

    from cos.eta import ClaimWork
    from cos.pytest_plugin import _ID_KEY, _PLAN_KEY, _PROGRESS_DIR, _SESSION, _WORK_KEY, CosSession, _Hooks

    plan = {k: ClaimWork(k, 10.0, {}, [(1.0, 1.0)]) for k in "abcd"}
    said: list[str] = []
    clock = [0.0]
    folder = tmp_path / "progress"
    folder.mkdir()
    ctl = SimpleNamespace(config=SimpleNamespace(stash={_PROGRESS_DIR: str(folder)}), say=said.append, tracker=None,
                          _xdist_workers=set(), start=0.0, pilot_path=None, eta=None, is_worker=False,
                          _eta_failed=False, results={})
    ctl.config.stash[_SESSION] = ctl
    for name in ("_workers_plan", "_workers_progress", "_waiting_workers", "_claim_ended_on", "_worker_claim_done",
                 "_advisory", "pytest_runtest_logreport"):
        setattr(ctl, name, types.MethodType(getattr(CosSession, name), ctl))

    def report(when, cid, worker, **props):
        return SimpleNamespace(when=when, user_properties=[(_ID_KEY, cid), *props.items()], passed=True,
                               skipped=False, failed=False, node=SimpleNamespace(gateway=SimpleNamespace(id=worker)))

    def ended(cid, worker, clock_s):
        clock[0] = clock_s
        (folder / f"{worker}.json").write_text(json.dumps({cid: [1.0, 1, [[1.0, 1.0]], True]}))
        ctl.pytest_runtest_logreport(report("teardown", cid, worker,
                                            **{_WORK_KEY: {"done": 1.0, "units": 1, "stops": [[1.0, 1.0]]}}))

    doc = lambda w, progress=True: {_PLAN_KEY: {"claims": {k: vars(c) for k, c in plan.items()},
                                                "est": {"eta_s": 40.0}, "worker": w, "workers": 4,
                                                "progress": progress}}
    for w, cid, progress in (("gw0", "a", True), ("gw1", "b", True), ("gw3", "c", True), ("gw2", "d", False),
                             (None, "d", True)):
        ctl.pytest_runtest_logreport(report("setup", cid, w, **doc(w, progress)))
    assert ctl._xdist_workers == {"gw0", "gw1", "gw3"} and ctl.eta["priced_by"] == "gw0", ctl._xdist_workers
    t = ctl.tracker
    t.clock, t.warm = (lambda: clock[0]), (0.0, 0.0)
    ended("b", "gw1", 5.0)
    assert said[-1] == "[cos] 1 of 4 claims done · run: 25% · ETA once gw0, gw3 have finished a batch", said[-1]
    assert t.trace == [] and t.eta() is None
    _Hooks(ctl.config).pytest_testnodedown(SimpleNamespace(gateway=SimpleNamespace(id="gw3")), None)    # down
    ended("d", "gw2", 6.0)                  # another host: its end counts, it was never waited for
    assert said[-1] == "[cos] 2 of 4 claims done · run: 50% · ETA once gw0 has finished a batch", said[-1]
    (folder / "gw0.tmp").write_text("{")    # a file being written (progress_writer_to) is not progress
    assert ctl._waiting_workers() == ["gw0"]
    ended("a", "gw0", 9.0)
    assert said[-1] == "[cos] 3 of 4 claims done · run: 75% · ETA 3.0s", said[-1]
    assert len(t.trace) == 1 and not t.hold
    ctl._xdist_workers |= {"gw5", "gw6"}
    ctl.pytest_runtest_logreport(report("teardown", "c", "gw6"))   # no progress payload: ends, the hold is fresh
    assert t.claims["c"].finished and t.hold and ctl._xdist_workers == {"gw5"}
    shutil.rmtree(folder)
    assert ctl._waiting_workers() == []     # the folder is gone: the ETA moves as claims end, waiting for nobody


def test_a_workers_plan_says_whether_it_leaves_progress(tmp_path):
    """An xdist worker's plan says whether it leaves progress the controller can read: a listener writing into
    the folder the controller gave it, which exists (not on another host)."""
    from types import SimpleNamespace

    from cos.eta import ClaimWork, RunEstimate
    from cos.pytest_plugin import _PLAN_KEY, _PROGRESS_DIR_KEY, CosSession

    def plan_of(folder, listener):
        tracker = RunEstimate({"a": ClaimWork("a", 1.0, {}, [(1.0, 1.0)])}, t0=0.0, start=0.0)
        tracker.listener = listener
        w = SimpleNamespace(eta={"eta_s": 1.0}, tracker=tracker, _plan_told=False, pilot_path=None,
                            config=SimpleNamespace(workerinput={_PROGRESS_DIR_KEY: str(folder)}))
        rep = SimpleNamespace(when="setup", user_properties=[])
        CosSession._tell_controller(w, rep, "a")
        return dict(rep.user_properties)[_PLAN_KEY]

    assert plan_of(tmp_path, print)["progress"] is True
    assert plan_of(tmp_path / "elsewhere", print)["progress"] is False      # a folder of another host's
    assert plan_of(tmp_path, None)["progress"] is False


def test_a_failing_eta_step_is_said_once_and_the_run_goes_on():
    from types import SimpleNamespace

    from cos.pytest_plugin import CosSession

    said: list[str] = []
    calls: list[int] = []
    s = SimpleNamespace(_eta_failed=False, say=said.append)

    def boom(k):
        calls.append(k)
        raise KeyError("x")

    CosSession._advisory(s, boom, 1)
    CosSession._advisory(s, boom, 2)       # stopped: not called again
    assert calls == [1] and len(said) == 1 and "the ETA stopped (KeyError" in said[0]
    with pytest.raises(pytest.exit.Exception):
        CosSession._advisory(SimpleNamespace(_eta_failed=False, say=said.append), pytest.exit, "bye")


@pytest.mark.parametrize("expr, claims", [("claims", True), ("claims and gpu", True), ("claims and full_model", True),
                                          ("not claims", False), ("not claims and not gpu and not full_model", False),
                                          ("gpu", False), ("", False), ("claims or slow", True)])
def test_selects_claims_evaluates_the_mark_expression(expr, claims):
    from types import SimpleNamespace

    from cos.pytest_plugin import _DEFAULTS, selects_claims

    config = SimpleNamespace(option=SimpleNamespace(markexpr=expr, **{d: v for d, v in _DEFAULTS.items()}))
    assert selects_claims(config) == claims
