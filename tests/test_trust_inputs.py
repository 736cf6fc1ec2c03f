"""Issue 28, inputs: every malformed file or option a user can hand cos is one line that names the file (or
option), the value and the rule, before any weights are read; nothing that did nothing reports success.

Model cases run `check_model_dir` (what `--cos-model` validation runs before the first test) and the same
through `validate_options`, on copies of the organism and of a tiny diffusers directory."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cos.registry import SCHEMA

from cos.errors import InputError, ModelLoadError
from cos.models.loading import check_model_dir, load_system, shipped_distilled
from cos.validation import validate_options

ROOT = Path(__file__).resolve().parent.parent
ORGANISM = ROOT / "fixtures" / "organism"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("COS_STORE_KEY", raising=False)


def one_line(msg: str, *words: str) -> None:
    assert "\n" not in msg and "Traceback" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def edit(rel: str, fn):
    """An edit of one JSON file of a model copy: fn(doc) changes it in place or returns a replacement."""
    def do(m: Path) -> Path:
        p = m / rel
        d = json.loads(p.read_text())
        out = fn(d)
        p.write_text(json.dumps(d if out is None else out))
        return p
    return do


def put(rel: str, data: bytes):
    def do(m: Path) -> Path:
        (m / rel).write_bytes(data)
        return m / rel
    return do


def fifo(rel: str):
    def do(m: Path) -> Path:
        (m / rel).unlink()
        os.mkfifo(m / rel)
        return m / rel
    return do


def devzero(rel: str):
    def do(m: Path) -> Path:
        (m / rel).unlink()
        (m / rel).symlink_to("/dev/zero")
        return m / rel
    return do


T, C, S, P = "transformer/config.json", "cos_model.json", "scheduler/scheduler_config.json", "prompt_encoder.json"

ORGANISM_CASES = [
    # (case, breakage of a copy of the organism -> the file it names, words of the one line)
    ("0 blocks", edit(T, lambda d: d.update(num_layers=0)), ["num_layers=0", "no blocks"]),
    ("num_layers disagrees with the weights", edit(T, lambda d: d.update(num_layers=3)),
     ["num_layers=3", "weights hold 12 blocks"]),
    ("config is a list", edit(T, lambda d: [d]), ["must hold a JSON object, not list"]),
    ("heads a string", edit(T, lambda d: d.update(num_attention_heads="two")),
     ["num_attention_heads='two'", "positive integer"]),
    ("head dim negative", edit(T, lambda d: d.update(attention_head_dim=-32)), ["attention_head_dim=-32"]),
    ("patch of 2 dims", edit(T, lambda d: d.update(patch_size=[2, 2])), ["patch_size=[2, 2]", "3 positive integers"]),
    ("in_channels a bool", edit(T, lambda d: d.update(in_channels=True)), ["in_channels=True", "positive integer"]),
    ("config not UTF-8", put(T, b"{\xff\xfe}"), ["malformed JSON"]),
    ("config a FIFO", fifo(T), ["a FIFO, not a regular file"]),
    ("config a link to /dev/zero", devzero(T), ["a character device, not a regular file"]),
    ("cos_model.json a number", edit(C, lambda d: 42), ["must hold a JSON object, not int"]),
    ("vae a string", edit(C, lambda d: d.update(vae="identity")), ["vae='identity'", "must be an object"]),
    ("vae channels a string", edit(C, lambda d: d["vae"].update(channels="3")), ["channels='3'", "positive integer"]),
    ("defaults a list", edit(C, lambda d: d.update(defaults=[12])), ["defaults=[12]", "must be an object"]),
    ("defaults steps 0", edit(C, lambda d: d["defaults"].update(steps=0)), ["steps=0", "positive integer"]),
    ("defaults height 15", edit(C, lambda d: d["defaults"].update(height=15)), ["height=15", "multiple of 16"]),
    ("defaults guidance a word", edit(C, lambda d: d["defaults"].update(guidance_scale="high")),
     ["guidance_scale='high'", "finite number >= 0"]),
    ("boundary 1.5", edit(C, lambda d: d.update(boundary_ratio=1.5)), ["boundary_ratio=1.5", "in (0, 1)"]),
    ("empty name", edit(C, lambda d: d.update(name="")), ["name=''", "non-empty string"]),
    ("flow shift negative", edit(S, lambda d: d.update(flow_shift=-1)), ["flow_shift=-1", "finite number > 0"]),
    ("scheduler config truncated", put(S, b'{"_class_name": "UniPC'), ["malformed JSON"]),
    ("train timesteps 0", edit(S, lambda d: d.update(num_train_timesteps=0)), ["num_train_timesteps=0"]),
    ("vocab a string", edit(P, lambda d: d.update(vocab="maze goal")), ["vocab='maze goal'", "list of words"]),
    ("vocab one word longer than the table", edit(P, lambda d: d["vocab"].append("extra")),
     ["embedding of shape [43, 32]", "44 words"]),
    ("text_dim 0", edit(P, lambda d: d.update(text_dim=0)), ["text_dim=0", "positive integer"]),
    (".bin weights beside the safetensors", put("transformer/diffusion_pytorch_model.bin", b"\x80\x04pickle"),
     ["pickle format", "convert to .safetensors"]),
    ("weights a FIFO", fifo("transformer/diffusion_pytorch_model.safetensors"), ["not a regular file"]),
]


@pytest.fixture
def organism(tmp_path):
    return Path(shutil.copytree(ORGANISM, tmp_path / "organism"))


@pytest.mark.parametrize("case,break_,words", ORGANISM_CASES, ids=[c for c, _, _ in ORGANISM_CASES])
def test_a_malformed_organism_is_one_line_before_any_weights(organism, no_hang, case, break_, words):
    f = break_(organism)
    with pytest.raises(ModelLoadError) as e:
        check_model_dir(organism)
    one_line(str(e.value), str(f), *words)
    with pytest.raises(InputError) as e:                      # the same, as the plugin's option check says it
        validate_options({"--cos-model": str(organism)})
    one_line(str(e.value), "--cos-model: ", str(f), *words)


def test_a_json_over_its_bound_is_not_read(organism, monkeypatch):
    import cos.models.loading as loading

    monkeypatch.setattr(loading, "MAX_JSON_BYTES", 100)
    with pytest.raises(ModelLoadError) as e:
        check_model_dir(organism)
    one_line(str(e.value), str(organism / "cos_model.json"), "more than the 100 allowed")


DISTILLED = [
    ("weight a word", lambda d: d["distilled"]["loras"][0].update(weight="x"), ["weight='x'", "finite nonzero"]),
    ("weight 0", lambda d: d["distilled"]["loras"][0].update(weight=0), ["weight=0", "finite nonzero"]),
    ("path outside the model", lambda d: d["distilled"]["loras"][0].update(path="../../outside.safetensors"),
     ["'../../outside.safetensors'", "outside the model directory"]),
    ("steps 0", lambda d: d["distilled"].update(steps=0), ["steps=0", "positive integer"]),
    ("path a number", lambda d: d["distilled"]["loras"][0].update(path=7), ['non-empty list "loras"']),
]


@pytest.mark.parametrize("case,fn,words", DISTILLED, ids=[c for c, _, _ in DISTILLED])
def test_a_malformed_distilled_declaration_is_one_line(organism, tmp_path, case, fn, words):
    (tmp_path / "outside.safetensors").write_bytes(b"x")
    edit(C, fn)(organism)
    with pytest.raises(ModelLoadError) as e:
        shipped_distilled(organism)
    one_line(str(e.value), str(organism / C), *words)
    with pytest.raises(InputError) as e:                      # before the first test, not in a session fixture
        validate_options({"--cos-model": str(organism)})
    one_line(str(e.value), "--cos-model: ", str(organism / C), *words)


@pytest.fixture(scope="module")
def wan_src(tmp_path_factory):
    from tests.helpers import write_wan_dir

    root = tmp_path_factory.mktemp("wan")
    write_wan_dir(root)
    return root


def _shard_index(m: Path) -> Path:
    p = m / "transformer" / "diffusion_pytorch_model.safetensors.index.json"
    p.write_text(json.dumps({"weight_map": ["diffusion_pytorch_model.safetensors"]}))
    return p


WAN_CASES = [
    ("transformer_2 declared as a word", edit("model_index.json", lambda d: d.update(transformer_2="yes")),
     ["transformer_2='yes'", "[library, class]"]),
    ("boundary a word", edit("model_index.json", lambda d: d.update(boundary_ratio="half")), ["boundary_ratio='half'"]),
    ("vae z_dim a string", edit("vae/config.json", lambda d: d.update(z_dim="16")), ["z_dim='16'", "positive integer"]),
    ("shard index of a list", _shard_index, ["weight_map must map tensor names"]),
    ("second expert with 0 blocks", edit("transformer_2/config.json", lambda d: d.update(num_layers=0)), ["num_layers=0"]),
]


@pytest.mark.parametrize("case,break_,words", WAN_CASES, ids=[c for c, _, _ in WAN_CASES])
def test_a_malformed_diffusers_dir_is_one_line(wan_src, tmp_path, case, break_, words):
    m = Path(shutil.copytree(wan_src, tmp_path / "m"))
    f = break_(m)
    with pytest.raises(ModelLoadError) as e:
        check_model_dir(m)
    one_line(str(e.value), str(f), *words)


def test_what_diffusers_still_refuses_is_one_line_naming_the_folder(organism):
    edit(T, lambda d: d.update(ffn_dim=128))(organism)          # passes the type checks, not the weights' shapes
    with pytest.raises(ModelLoadError) as e:
        load_system(organism)
    one_line(str(e.value), str(organism / "transformer"), "cannot be loaded")


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    d = tmp_path_factory.mktemp("loras")
    sd = load_file(ORGANISM / "distill" / "four_step_lora.safetensors")
    save_file({k: torch.zeros_like(v) if "lora_B" in k else v for k, v in sd.items()}, str(d / "zero_b.safetensors"))
    save_file({k: torch.zeros_like(v) if "lora_A" in k else v for k, v in sd.items()}, str(d / "zero_a.safetensors"))
    save_file({"transformer.blocks.0.attn1.to_q.lora_A.weight": torch.ones(4, 64)}, str(d / "half.safetensors"))
    return d


LORAS = [
    ("every lora_B zero", "zero_b.safetensors", 1.0, ["changes nothing", "every B·A product is zero"]),
    ("every lora_A zero", "zero_a.safetensors", 1.0, ["changes nothing"]),
    ("A without B", "half.safetensors", 1.0, ["changes nothing"]),
    ("weight 0", "zero_b.safetensors", 0.0, ["weight 0 changes nothing"]),
]


@pytest.mark.parametrize("case,name,weight,words", LORAS, ids=[c for c, _, _, _ in LORAS])
def test_a_lora_that_changes_nothing_is_refused(loras, case, name, weight, words):
    with pytest.raises(ModelLoadError) as e:
        load_system(ORGANISM, loras=[(loras / name, weight)])
    one_line(str(e.value), str(loras / name), *words)


def _status(tmp: Path, rows) -> str:
    p = tmp / "base.json"
    p.write_text(json.dumps({"schema": SCHEMA, "claims": rows}))
    return str(p)


def _mode_key(tmp: Path, mode: int) -> str:
    p = tmp / "k.key"
    p.write_text(os.urandom(32).hex())
    p.chmod(mode)
    return str(p)


def _fifo_file(tmp: Path) -> str:
    os.mkfifo(tmp / "base.json")
    return str(tmp / "base.json")


def _devzero_file(tmp: Path) -> str:
    (tmp / "base.json").symlink_to("/dev/zero")
    return str(tmp / "base.json")


OPTIONS = [
    # (case, option, value (from the tmp dir), words of the one line)
    ("unknown task", "--cos-tasks", lambda t: "maze,nope", ["'maze,nope'", "unknown task(s) nope", "known: "]),
    ("no task at all", "--cos-tasks", lambda t: " , ", ["' , '", "names no task"]),
    ("LoRA at weight 0", "--cos-lora", lambda t: f"{ORGANISM / 'distill' / 'four_step_lora.safetensors'}:0",
     ["weight 0 changes nothing"]),
    ("LoRA a FIFO", "--cos-lora", lambda t: (os.mkfifo(t / "l.safetensors"), str(t / "l.safetensors"))[1],
     ["not a regular file"]),
    ("store key missing", "--cos-store-key", lambda t: str(t / "nope.key"), ["nope.key", "does not exist"]),
    ("store key readable by others", "--cos-store-key", lambda t: _mode_key(t, 0o644), ["readable by others", "chmod 600"]),
    ("baseline a FIFO", "--cos-baseline", _fifo_file, ["base.json", "a FIFO, not a regular file"]),
    ("baseline /dev/zero", "--cos-baseline", _devzero_file, ["base.json", "a character device"]),
    ("baseline row id a list", "--cos-baseline", lambda t: _status(t, [{"id": ["x"], "status": "holds"}]),
     ["claims[0]", "string id", "['x']"]),
    ("baseline status unknown", "--cos-baseline", lambda t: _status(t, [{"id": "x", "status": "great"}]),
     ["claims[0]", "'great'"]),
    ("baseline version a string", "--cos-baseline", lambda t: _status(t, [{"id": "x", "status": "holds", "version": "2"}]),
     ["claims[0] (x)", "version '2' must be an integer"]),
]


@pytest.mark.parametrize("case,flag,value,words", OPTIONS, ids=[c for c, _, _, _ in OPTIONS])
def test_a_bad_option_is_one_line_naming_option_value_and_rule(tmp_path, no_hang, case, flag, value, words):
    v = value(tmp_path)
    with pytest.raises(InputError) as e:
        validate_options({flag: [v] if flag == "--cos-lora" else v})
    one_line(str(e.value), flag, *words)


def _draws(out: Path, lines: list) -> None:
    out.mkdir(exist_ok=True)
    (out / "draws.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))


def _cal(out: Path, doc) -> None:
    (out / "calibration.json").write_text(doc if isinstance(doc, str) else json.dumps(doc))


GOOD = {"tier": "cpu", "claim": "cos.superposition", "version": 1, "control": "x", "draw": 1, "status": "holds",
        "check": True, "measured": 0.1, "mde": None, "seconds": 1.0, "ci": [0.0, 0.2]}
PROV = {"tier": "cpu", "draws": 20, "jobs": 1, "wall_s": 1.0}


def _summ_fifo(out: Path) -> None:
    out.mkdir()
    _cal(out, {"provenance": PROV})
    os.mkfifo(out / "draws.jsonl")


CLI = [
    # (case, argv (out dir as {out}), set-up of the out dir, words of the one line on stderr)
    ("validate -k matching nothing", ["validate", "--out", "{out}", "-k", "nomatch"], None,
     ["-k 'nomatch'", "matches no claim"]),
    ("summarize a malformed calibration.json", ["validate", "--out", "{out}", "--summarize-only"],
     lambda o: (_draws(o, [GOOD]), _cal(o, "{oops")), ["calibration.json", "malformed JSON"]),
    ("summarize a calibration.json without provenance", ["validate", "--out", "{out}", "--summarize-only"],
     lambda o: (_draws(o, [GOOD]), _cal(o, {"claims": {}})), ["calibration.json", "provenance needs"]),
    ("summarize draws that are a FIFO", ["validate", "--out", "{out}", "--summarize-only"], _summ_fifo,
     ["draws.jsonl", "a FIFO"]),
    ("merge into a store holding the key", ["merge", "{out}/src", "--into", "{out}"],
     lambda o: None, ["must not live inside the store"]),
    ("status of a FIFO", ["status", "{out}/s.json"], lambda o: (o.mkdir(), os.mkfifo(o / "s.json")),
     ["s.json", "a FIFO, not a regular file"]),
    ("status compared with /dev/zero", ["status", "{out}/s.json", "--compare", "{out}/z.json"],
     lambda o: (o.mkdir(), _status(o, [{"id": "x", "status": "holds"}]), os.replace(o / "base.json", o / "s.json"),
                (o / "z.json").symlink_to("/dev/zero")), ["z.json", "a character device"]),
]


@pytest.mark.parametrize("case,argv,setup,words", CLI, ids=[c for c, _, _, _ in CLI])
def test_a_bad_command_is_one_line_and_a_nonzero_exit(tmp_path, monkeypatch, capsys, no_hang, case, argv, setup, words):
    from cos.cli import main

    out = tmp_path / "out"
    if setup is not None:
        setup(out)
    if case.startswith("merge"):
        (out / "src").mkdir(parents=True)
        monkeypatch.setenv("COS_CACHE_DIR", str(out / "cache"))     # the default key would be made in the store
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert main([a.replace("{out}", str(out)) for a in argv]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    one_line(err.strip(), *words)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before      # nothing made or deleted


def test_cos_run_without_a_model_outside_a_checkout_is_one_line(tmp_path, monkeypatch, capsys):
    import cos.pytest_plugin
    from cos.cli import main

    monkeypatch.setattr(cos.pytest_plugin, "DEFAULT_MODEL", tmp_path / "no-organism")
    assert main(["run", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--model: none given" in err and not (tmp_path / "o").exists()


def test_hand_edited_draws_are_skipped_with_one_line_and_rerun(tmp_path, capsys):
    import sys

    from cos.calibration import _load

    bad = [{**GOOD, "draw": 2, "version": "1"}, [1, 2], {**GOOD, "draw": 3, "status": "great"},
           {**GOOD, "draw": 4, "ci": None}]
    _draws(tmp_path, [GOOD, *bad, "not json", '{"tier": "cpu", "cut sh'])
    done = _load(tmp_path / "draws.jsonl", sys.stderr)
    assert list(done.values()) == [GOOD]
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "5 line(s) are not draw records (first: line 2)" in err
