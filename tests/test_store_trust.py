"""The store never unpickles, checks every entry's checksum, lets one process compute a key, cleans up."""
import json
import math
import multiprocessing
import os
import pickle
import time

import pytest
import torch

from cos.models.reference import reference_system
from cos.runner import RunContext
from cos.sampler import Sampler
from cos.settings import ClaimSettings
from cos.store import ResultStore, StoreWarning, merge, pack, unpack

SET = ClaimSettings(tasks=("maze",), instances=2, seeds=(0,), steps=3, batch_size=2)


class Boom:
    """Unpickling this runs code: it writes a marker file."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_nested_data_round_trips_exactly():
    value = {"latents": torch.randn(2, 3, 4, dtype=torch.bfloat16), "steps": [0, 1, 2], "sigmas": [1.0, 0.5, 1e-300],
             "trajectory": {"x0": torch.arange(24).view(2, 3, 4)[:, 1:]}, "forwards": 7, "empty": torch.zeros(0, 3),
             "mask": torch.tensor([True, False]), "tuple": (1, "a"), "odd": {3: "int key", "__tensor__": 1},
             "nan": float("nan"), "inf": -math.inf, "none": None, "flag": True, "text": "ü"}
    back = unpack(pack("k", value), "k")
    assert back.keys() == value.keys()
    for k in ("latents", "empty", "mask"):
        assert back[k].dtype == value[k].dtype and torch.equal(back[k], value[k])
    assert torch.equal(back["trajectory"]["x0"], value["trajectory"]["x0"])
    assert back["sigmas"] == value["sigmas"] and back["tuple"] == (1, "a") and back["odd"] == {3: "int key", "__tensor__": 1}
    assert math.isnan(back["nan"]) and back["inf"] == -math.inf and back["none"] is None and back["flag"] is True
    assert back["text"] == "ü" and type(back["forwards"]) is int
    with pytest.raises(TypeError, match="not Boom"):
        pack("k", {"x": Boom("/nonexistent")})


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "store")


def count_runs(monkeypatch):
    calls = []
    orig = Sampler.run
    monkeypatch.setattr(Sampler, "run", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    return calls


@pytest.mark.parametrize("where", ["new_name", "old_pt"])
def test_a_planted_pickle_never_runs_and_is_recomputed(tmp_path, monkeypatch, where):
    sysm = reference_system()
    s = ResultStore(tmp_path / "store")
    batch = next(RunContext(store=s).batches(SET))
    RunContext(store=s).run(sysm, SET, batch)
    good = next(s.root.glob("*/*.safetensors"))
    marker = tmp_path / "pwned"
    evil = pickle.dumps({"latents": Boom(marker)})
    if where == "new_name":
        good.write_bytes(evil)
        opened = ResultStore(s.root)
    else:   # an old-format store: `<key>.pt` torch.save/pickle files only
        good.with_suffix(".pt").write_bytes(evil)
        good.unlink()
        with pytest.warns(StoreWarning, match="old pickle format"):
            opened = ResultStore(s.root)
    calls = count_runs(monkeypatch)
    ctx = pytest.warns(StoreWarning, match="not a cos store entry") if where == "new_name" else _nothing()
    with ctx:
        out = RunContext(store=opened).run(sysm, SET, batch)
    assert not marker.exists() and len(calls) == 1 and opened.misses == 1
    assert torch.isfinite(out.latents).all()
    assert unpack(good.read_bytes(), good.stem) is not None      # rewritten in the new format
    with pytest.warns(StoreWarning, match="old-format") if where == "old_pt" else _nothing():
        assert merge([tmp_path / "store"], tmp_path / "merged") == 1     # the .pt is skipped, never loaded
    assert not marker.exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


@pytest.mark.parametrize("damage", ["flip", "zero", "swap", "empty"])
def test_damaged_entries_are_misses_with_one_warning(tmp_path, damage):
    s = ResultStore(tmp_path)
    s.put("a" * 32, {"x": torch.arange(100.0), "n": 1})
    s.put("b" * 32, {"x": torch.arange(100.0) + 1, "n": 2})
    pa, pb = s.path("a" * 32), s.path("b" * 32)
    raw = bytearray(pa.read_bytes())
    if damage == "flip":
        raw[-5] ^= 0x01
        pa.write_bytes(bytes(raw))
    elif damage == "zero":
        pa.write_bytes(bytes(len(raw)))
    elif damage == "swap":
        pa.write_bytes(pb.read_bytes())
    else:
        pa.write_bytes(b"")
    with pytest.warns(StoreWarning) as w:
        assert s.get("a" * 32) is None
    assert len(w) == 1 and "\n" not in str(w[0].message) and str(pa) in str(w[0].message)
    s.put("a" * 32, {"x": torch.arange(100.0), "n": 1})      # recomputed and written back
    assert s.get("a" * 32)["n"] == 1 and s.get("b" * 32)["n"] == 2


def test_merge_skips_a_damaged_entry(tmp_path):
    src = ResultStore(tmp_path / "src")
    src.put("a" * 32, {"n": 1})
    src.put("b" * 32, {"n": 2})
    src.path("b" * 32).write_bytes(src.path("a" * 32).read_bytes())     # b now holds a's entry
    with pytest.warns(StoreWarning, match="swapped file"):
        assert merge([src.root], tmp_path / "dst") == 1
    assert ResultStore(tmp_path / "dst").get("a" * 32) == {"n": 1}


def _worker(root, key, log):
    s = ResultStore(root, poll_s=0.05)
    if s.get(key) is None:
        with open(log, "a") as f:
            f.write(f"compute {os.getpid()}\n")
        time.sleep(1.0)
        s.put(key, {"who": os.getpid(), "x": torch.ones(3)})
    return s.get(key)["who"]


def test_two_processes_compute_a_key_once(tmp_path):
    log = tmp_path / "log"
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        whos = pool.starmap(_worker, [(str(tmp_path / "s"), "c" * 32, str(log))] * 2)
    assert len(log.read_text().splitlines()) == 1
    assert whos[0] == whos[1]
    assert not list((tmp_path / "s").glob("*/*.claim"))


def test_a_dead_holders_claim_is_broken(tmp_path):
    s = ResultStore(tmp_path, poll_s=0.01)
    claim = tmp_path / "dd" / ("d" * 32 + ".claim")
    claim.parent.mkdir()
    dead = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    import socket
    claim.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "time": 0}))
    assert s.get("d" * 32) is None          # not waiting forever: the claim is now ours
    s.put("d" * 32, {"n": 1})
    assert not claim.exists()


def test_a_live_claim_without_heartbeat_goes_stale(tmp_path):
    s = ResultStore(tmp_path, poll_s=0.01, claim_stale_s=0.3)
    claim = tmp_path / "ee" / ("e" * 32 + ".claim")
    claim.parent.mkdir()
    claim.write_text(json.dumps({"pid": 1, "host": "another-host", "time": 0}))
    t0 = time.time()
    assert s.get("e" * 32) is None
    assert 0.2 < time.time() - t0 < 5


def test_stale_temporaries_are_cleaned_when_a_store_opens(tmp_path):
    s = ResultStore(tmp_path)
    s.put("f" * 32, {"n": 1})
    d = s.path("f" * 32).parent
    old = d / ("f" * 32 + ".safetensors.tmp123-whatever")
    old.write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    dead = multiprocessing.get_context("spawn").Process(target=time.sleep, args=(0,))
    dead.start()
    dead.join()
    from cos.store import _HOST_TAG
    orphan = d / (f"{'f' * 32}.safetensors.tmp{dead.pid}-{_HOST_TAG}")
    orphan.write_bytes(b"x")
    live = d / (f"{'f' * 32}.safetensors.tmp{os.getppid()}-{_HOST_TAG}")   # a live writer's: kept
    live.write_bytes(b"x")
    ResultStore(tmp_path)
    assert not old.exists() and not orphan.exists() and live.exists()
    assert ResultStore(tmp_path).get("f" * 32) == {"n": 1}


def test_a_planted_training_checkpoint_is_refused_without_running_code(tmp_path):
    from cos.errors import CosError
    from cos.train import train
    from tests.helpers import small_cfg

    marker = tmp_path / "pwned"
    (tmp_path / "run").mkdir()
    torch.save({"model": Boom(marker)}, tmp_path / "run" / "ckpt.pt")
    with pytest.raises(CosError, match="refused to load") as e:
        train(small_cfg(), tmp_path / "run", device="cpu", steps=1)
    assert not marker.exists() and "\n" not in str(e.value)
