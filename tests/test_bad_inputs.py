"""Every bad input is one clean line and a nonzero exit, before anything is sampled.

Plugin cases run pytest in a subprocess with the bad `--cos-*` option on a test that would leave a marker file
(so "no test ran, nothing was sampled" is checked); CLI cases run `python -m cos.cli` and check that the file the
verb would have written is absent."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = "cos.claims-status/1"
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")


def files(tmp: Path) -> dict[str, str]:
    """The inputs the cases name: {name} in a case is replaced by the path made here."""
    tmp.mkdir(exist_ok=True)
    (tmp / "afile").write_text("x")
    (tmp / "notes.safetensors").write_text("hello, these are release notes and not weights\n" * 3)
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 8)}, str(tmp / "good.safetensors"))
    (tmp / "notstatus.json").write_text(json.dumps({"rows": []}))
    (tmp / "oldschema.json").write_text(json.dumps({"schema": "cos.claims-status/0",
                                                    "claims": [{"id": "cos.superposition", "status": "holds"}]}))
    (tmp / "status.json").write_text((ROOT / "claims-baseline.json").read_text())
    (tmp / "rowless.json").write_text(json.dumps({"schema": SCHEMA, "claims": [{"id": "x", "status": "holds"}]}))
    names = {"afile": "afile", "notes": "notes.safetensors", "good": "good.safetensors", "notstatus": "notstatus.json",
             "oldschema": "oldschema.json", "status": "status.json", "rowless": "rowless.json"}
    return {k: str(tmp / v) for k, v in names.items()} | {"tmp": str(tmp)}


PLUGIN_CASES = [
    (["--cos-steps", "0"], "--cos-steps 0: must be a positive integer"),
    (["--cos-steps", "-3"], "--cos-steps -3: must be a positive integer"),
    (["--cos-instances", "0"], "--cos-instances 0: must be a positive integer"),
    (["--cos-size", "480x832"], "--cos-size '480x832': expected HxWxF"),
    (["--cos-size", "481x832x81"], "multiples of 16"),
    (["--cos-size", "480x832x80"], "frames must be 4k+1"),
    (["--cos-flow-shift", "0"], "--cos-flow-shift 0.0: must be a finite number > 0"),
    (["--cos-flow-shift", "-1"], "--cos-flow-shift -1.0: must be a finite number > 0"),
    (["--cos-tolerance", "-0.1"], "--cos-tolerance -0.1: must be a finite number >= 0"),
    (["--cos-tolerance", "nan"], "--cos-tolerance nan: must be a finite number >= 0"),
    (["--cos-looks", "0"], "--cos-looks '0': must be a positive integer"),
    (["--cos-looks", "11"], "--cos-looks '11': must be at most 10"),
    (["--cos-looks", "1"], "--cos-looks '1': must be at least 2 (one look is fixed n"),
    (["--cos-looks", "5", "--cos-sequential", "off"], "--cos-looks '5': only with sequential decisions"),
    # a gate at the cpu tier decides at fixed n, as any run there: refused, not silently ignored
    (["--cos-looks", "4", "--cos-tier", "cpu", "--cos-against", str(ROOT / "fixtures" / "organism")],
     "--cos-looks '4': only with sequential decisions (--cos-sequential on; auto is off at the cpu tier)"),
    (["--cos-shard", "2/2"], "--cos-shard '2/2': need 0 <= I < N"),
    (["--cos-shard", "half"], "--cos-shard 'half': expected I/N"),
    pytest.param(["--cos-device", "cuda"], "CUDA is not available here", marks=NO_CUDA),
    pytest.param(["--cos-device", "cuda:1"], "CUDA is not available here", marks=NO_CUDA),
    (["--cos-device", "tpu"], "must be cpu, cuda, cuda:N or auto"),
    (["--cos-out", "{afile}"], "must be a directory, and this is a file"),
    (["--cos-store", "{afile}"], "--cos-store"),
    (["--cos-lora", "{notes}"], "not a safetensors file"),
    (["--cos-model-lora", "{tmp}/missing.safetensors:1.0"], "does not exist"),
    (["--cos-lora", "{good}:nan"], "the LoRA weight must be a finite number"),
    (["--cos-lora", "{tmp}"], "exactly one .safetensors file, found 2"),
    (["--cos-baseline", "{notstatus}"], "not a claims-status file"),
    (["--cos-baseline", "{oldschema}"], "of schema 'cos.claims-status/0'"),
    (["--cos-baseline", "{tmp}/nope.json"], "claims-status file does not exist"),
    (["--cos-model", "{tmp}/nowhere"], "model path does not exist"),
    (["--cos-model", "{afile}"], "must be a model directory"),
]


def _fill(args, paths):
    return [a.format(**paths) if "{" in a else a for a in args]


@pytest.mark.parametrize("args,message", PLUGIN_CASES)
def test_plugin_refuses_bad_option_in_one_line(pytester, args, message):
    paths = files(pytester.path / "in")
    marker = pytester.path / "sampled"
    pytester.makepyfile(test_x=f"def test_x():\n    open({str(marker)!r}, 'w')\n")
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", *_fill(args, paths))
    err = [line for line in res.stderr.lines if line.strip()]
    assert res.ret == pytest.ExitCode.USAGE_ERROR, res.stdout.str() + res.stderr.str()
    assert len(err) == 1 and err[0].startswith("ERROR: ") and message in err[0], err
    assert args[0] in err[0]
    assert "Traceback" not in res.stdout.str() + res.stderr.str()
    assert not marker.exists()


CLI_CASES = [
    (["trace", "--task", "maze", "--every", "0", "--out", "{tmp}/t.png"], "--every 0: must be a positive integer"),
    pytest.param(["trace", "--task", "maze", "--device", "cuda", "--out", "{tmp}/t.png"], "CUDA is not available",
                 marks=NO_CUDA),
    (["trace", "--task", "nosuchtask", "--out", "{tmp}/t.png"], "nosuchtask"),
    (["trace", "--task", "maze", "--model", "{tmp}/nowhere", "--out", "{tmp}/t.png"], "model path does not exist"),
    (["trace", "--task", "maze", "--seed", "-1", "--out", "{tmp}/t.png"], "--seed -1: must be 0 or more"),
    (["train", "--config", "fixtures/organism_train.json", "--out", "{tmp}/t.png", "--steps", "0"],
     "--steps 0: must be a positive integer"),
    (["train", "--config", "{tmp}/missing.json", "--out", "{tmp}/t.png"], "cannot read training config"),
    (["train", "--config", "fixtures/organism_train.json", "--out", "{afile}/t.png"], "cannot be created"),
    (["evaluate", "--model", "fixtures/organism", "--n", "0", "--json", "{tmp}/t.png"], "--n 0: must be a positive"),
    (["evaluate", "--model", "fixtures/organism", "--n", "1", "--json", "{tmp}/t.png"], "--n 1: must be at least 2"),
    pytest.param(["evaluate", "--model", "fixtures/organism", "--device", "cuda", "--json", "{tmp}/t.png"],
                 "CUDA is not available", marks=NO_CUDA),
    (["status", "{status}", "--compare", "{oldschema}"], "compare files of one schema"),
    (["status", "{tmp}/nope.json"], "claims-status file does not exist"),
    (["status", "{rowless}"], "claims[0] is not a claim row"),
    (["merge", "{tmp}/nostore", "--into", "{tmp}/t.png"], "not a result store folder"),
]


def cos_cli(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "cos.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


@pytest.mark.parametrize("args,message", CLI_CASES)
def test_cli_refuses_bad_input_in_one_line(tmp_path, args, message):
    paths = files(tmp_path)
    res = cos_cli(*_fill(args, paths))
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stdout + res.stderr
    assert len(err) == 1 and err[0].startswith(f"cos {args[0]}: ") and message in err[0], err
    assert "Traceback" not in res.stdout + res.stderr
    assert not (tmp_path / "t.png").exists()          # nothing sampled, trained or written


# `python -m MODULE ARGS...` that says at its end, whatever the exit (a refusal is a SystemExit), which heavy
# packages it imported: a `finally` rather than atexit, which other packages' handlers run around
LIGHT_RUN = """
import json, runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
finally:
    print("HEAVY", json.dumps(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "diffusers", "scipy", "matplotlib"})))
"""
LAUNCHED = {"WORLD_SIZE": "2", "LOCAL_WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29511"}
LIGHT_CASES = [     # (module, args, message, launcher environment)
    ("cos.cli", ["status", "{tmp}/nope.json"], "claims-status file does not exist", {}),
    ("cos.cli", ["trace", "--task", "maze", "--every", "0", "--out", "{tmp}/t.png"], "--every 0: must be a positive",
     {}),
    ("cos.cli", ["trace", "--task", "maze", "--seed", "-1", "--out", "{tmp}/t.png"], "--seed -1: must be 0 or more",
     {}),
    ("cos.cli", ["plan", "--gpus", "0"], "--gpus 0: must be at least 1", {}),
    ("cos.cli", ["validate", "--out", "{tmp}/v", "--draws", "0"], "--draws 0: must be a positive integer", {}),
    ("pytest", ["--cos-looks", "5", "--cos-sequential", "off"], "--cos-looks '5': only with sequential decisions", {}),
    ("pytest", ["--cos-looks", "5", "--cos-tier", "cpu"], "auto is off at the cpu tier", {}),
    ("pytest", ["--cos-looks", "0"], "--cos-looks '0': must be a positive integer", {}),
    # a rank of a launch: refused before the launch's thread limit imports torch
    ("pytest", ["--cos-shard", "0/2"], "--cos-shard splits the batches", LAUNCHED),
    ("pytest", ["--cos-store", "none"], "--cos-store none cannot be used under accelerate launch", LAUNCHED),
]


@pytest.mark.parametrize("module,args,message,launched", LIGHT_CASES)
def test_a_refusal_imports_nothing_heavy(tmp_path, module, args, message, launched):
    """A bad value is refused in one line before torch, diffusers, scipy or matplotlib are imported (seconds each),
    where the check needs none of them. (--cos-looks K without a tier or --cos-sequential needs torch: the tier
    depends on whether CUDA is there.)"""
    paths = files(tmp_path / "in")
    marker = tmp_path / "sampled"
    (tmp_path / "test_x.py").write_text(f"def test_x():\n    open({str(marker)!r}, 'w')\n")
    plugin = module == "pytest"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTEST_XDIST_WORKER", "PYTEST_ADDOPTS", "WORLD_SIZE",
                                                            "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    res = subprocess.run([sys.executable, "-c", LIGHT_RUN, module, *(["-p", "no:cacheprovider"] if plugin else []),
                          *_fill(args, paths)], capture_output=True, text=True, cwd=tmp_path if plugin else ROOT,
                         env={**env, **launched}, timeout=300)
    err = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == (pytest.ExitCode.USAGE_ERROR if plugin else 2), res.stdout + res.stderr
    assert len(err) == 1 and err[0].startswith("ERROR: " if plugin else f"cos {args[0]}: ") and message in err[0], err
    heavy = [line for line in res.stdout.splitlines() if line.startswith("HEAVY ")]
    assert heavy, res.stdout            # the wrapper's report: the process ran to its end
    assert json.loads(heavy[-1][6:]) == [], f"imported before the refusal: {heavy[-1][6:]}"
    assert not marker.exists() and not (tmp_path / "in" / "t.png").exists()


def _baseline() -> dict:
    return json.loads((ROOT / "claims-baseline.json").read_text())


def test_status_compare_exits_1_on_a_regression(tmp_path):
    base, now = _baseline(), _baseline()
    base["claims"] = [{**c, "status": "holds"} if c["id"] == "cos.superposition" else c for c in base["claims"]]
    now["claims"] = [{**c, "status": "fails"} if c["id"] == "cos.superposition" else c for c in now["claims"]]
    (tmp_path / "b.json").write_text(json.dumps(base))
    (tmp_path / "n.json").write_text(json.dumps(now))
    res = cos_cli("status", str(tmp_path / "n.json"), "--compare", str(tmp_path / "b.json"))
    assert res.returncode == 1 and "regressed ['cos.superposition']" in res.stdout
    assert cos_cli("status", str(tmp_path / "b.json"), "--compare", str(tmp_path / "b.json")).returncode == 0


def test_status_compare_warns_about_another_tier(tmp_path):
    now, other = _baseline(), _baseline()
    for c in other["claims"]:
        if "settings" in c["details"]:
            c["details"]["settings"].update(steps=50, instances=32)
    (tmp_path / "b.json").write_text(json.dumps(other))
    (tmp_path / "n.json").write_text(json.dumps(now))
    res = cos_cli("status", str(tmp_path / "n.json"), "--compare", str(tmp_path / "b.json"))
    assert res.returncode == 0
    assert res.stderr.strip().count("\n") == 0 and "steps 50 vs 12" in res.stderr and "another tier" in res.stderr
    assert "instances 32 vs 4" in res.stderr


def test_train_and_evaluate_parse_as_the_readme_writes_them(tmp_path):
    """`cos train --config ... --out ...` and `cos evaluate --model ... --n ...` used to be 'unrecognized
    arguments'; here they run at tiny sizes."""
    cfg = json.loads((ROOT / "fixtures" / "organism_train.json").read_text())
    cfg["model"]["num_layers"] = 1
    cfg["data"].update(pool_per_task=1, tasks=["pattern"])
    cfg["train"].update(batch=2, bf16=False, warmup=1)
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    res = cos_cli("train", "--config", str(tmp_path / "cfg.json"), "--out", str(tmp_path / "run"), "--steps", "1",
                  "--device", "cpu")
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "run" / "model" / "cos_model.json").exists()
    res = cos_cli("evaluate", "--model", str(tmp_path / "run" / "model"), "--n", "2", "--steps", "1", "--device", "cpu",
                  "--json", str(tmp_path / "e.json"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "all/all" in json.loads((tmp_path / "e.json").read_text())["summary"]
