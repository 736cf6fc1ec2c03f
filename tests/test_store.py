"""The result store: atomic, content-keyed, resumable; shards fill stores that merge into the unsharded run."""
from dataclasses import replace

import pytest
import torch

from cos.interventions import CaptureBlocks, NoiseAtStep
from cos.controls import random_organism
from cos.models.reference import reference_system
from cos.runner import RunContext
from cos.sampler import Sampler
from cos.settings import ClaimSettings
from cos.store import ResultStore, StoreWarning, fingerprint, key_of, merge

SET = ClaimSettings(tasks=("maze", "pattern"), instances=3, seeds=(0,), steps=4, batch_size=2)


@pytest.fixture
def store(tmp_path):
    return ResultStore(tmp_path / "store")


@pytest.fixture
def ctx(store):
    return RunContext(store=store, progress=False)


def count_runs(monkeypatch):
    calls = []
    orig = Sampler.run
    monkeypatch.setattr(Sampler, "run", lambda self, *a, **k: calls.append(1) or orig(self, *a, **k))
    return calls


def test_fingerprint_keys_tensors_by_content():
    a, b = torch.arange(6.0), torch.arange(6.0)
    assert key_of(x=a) == key_of(x=b) != key_of(x=b + 1)
    assert fingerprint(NoiseAtStep(3)) == fingerprint(NoiseAtStep(3)) != fingerprint(NoiseAtStep(4))


def test_second_run_is_read_back_and_equal(store, ctx, monkeypatch):
    sysm = reference_system()
    batch = next(ctx.batches(SET))
    first = ctx.run(sysm, SET, batch, record=("x0",))
    calls = count_runs(monkeypatch)
    again = ctx.run(sysm, SET, batch, record=("x0",))
    assert calls == [] and store.hits == 1
    assert torch.equal(first.latents, again.latents) and torch.equal(first["x0"], again["x0"])
    other = ctx.run(sysm, SET, batch, interventions=[NoiseAtStep(1)])     # another key
    assert not torch.equal(other.latents, first.latents) and len(store) == 2


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device: the runs must come back on it"))])
def test_computed_and_stored_runs_are_placed_as_without_a_store(store, ctx, device):
    # the readouts run where they run without a store: final latents on the model's device, the trajectory where
    # the sampler records it (the CPU)
    sysm = reference_system().to(device) if device != "cpu" else reference_system()
    batch = next(ctx.batches(SET))
    bare = RunContext(progress=False).run(sysm, SET, batch, record=("x0",))
    first = ctx.run(sysm, SET, batch, record=("x0",))
    again = ctx.run(sysm, SET, batch, record=("x0",))
    assert store.hits == 1
    for r in (first, again):
        assert r.latents.device == bare.latents.device and r.latents.device.type == device
        assert r["x0"].device == bare["x0"].device
    assert torch.equal(first["x0"], again["x0"]) and torch.equal(bare["x0"].cpu(), first["x0"].cpu())
    from cos.runner import _from_disk
    moved = _from_disk({"latents": torch.zeros(1), "steps": [], "timesteps": [], "sigmas": [],
                        "trajectory": {"x0": torch.zeros(2)}, "forwards": 0}, "k", torch.device("meta"))
    assert moved.latents.device.type == "meta" and moved["x0"].device.type == "cpu"


def test_captures_are_never_served_from_the_store(store, ctx):
    sysm = random_organism(num_layers=2)
    s = replace(SET, tasks=("pattern",), instances=1, steps=2)
    batch = next(ctx.batches(s))
    for _ in range(2):   # a capture must see the forward pass: filled both times, nothing stored
        cap = CaptureBlocks(blocks=[0], steps=[0])
        ctx.run(sysm, s, batch, interventions=[cap])
        assert cap[0, 0].shape[0] == 1
    assert len(store) == 0
    ctx.run(sysm, s, batch)
    assert len(store) == 1


def test_interrupted_sweep_resumes_without_recomputing(store, ctx, monkeypatch):
    sysm = reference_system()
    branches = {"s1": [NoiseAtStep(1)], "s2": [NoiseAtStep(2)]}
    all_batches = list(ctx.batches(SET))
    done = []
    with pytest.raises(KeyboardInterrupt):
        for k, b in enumerate(all_batches):
            if k == 2:
                raise KeyboardInterrupt
            done.append(ctx.sweep(sysm, SET, b, branches))
    assert len(store) == 2
    calls = count_runs(monkeypatch)
    resumed = [ctx.sweep(sysm, SET, b, branches) for b in all_batches]
    # the two finished batches come back from disk; only the third is sampled (4 segments: 2 prefix + 2 branch
    # ... the exact count is the sweep's business, what matters is that batches 0-1 cost nothing)
    assert store.hits == 2 and len(calls) > 0
    for a, b in zip(done, resumed):
        assert all(torch.equal(a[n].latents, b[n].latents) for n in a)


def test_shards_merge_into_the_unsharded_run(tmp_path, monkeypatch):
    sysm = reference_system()
    n_batches = len(list(RunContext(progress=False).batches(SET)))
    stores = []
    for i in range(2):
        s = ResultStore(tmp_path / f"shard{i}")
        shard = RunContext(store=s, shard=(i, 2), progress=False)
        for b in shard.batches(SET):
            shard.run(sysm, SET, b)
        stores.append(s)
    assert sorted(len(s) for s in stores) == [n_batches // 2, n_batches - n_batches // 2]
    assert merge([s.root for s in stores], tmp_path / "merged") == n_batches
    merged = ResultStore(tmp_path / "merged")
    ctx = RunContext(store=merged, progress=False)
    calls = count_runs(monkeypatch)
    out = [ctx.run(sysm, SET, b).latents for b in ctx.batches(SET)]
    assert calls == [] and merged.hits == n_batches
    bare = RunContext(progress=False)
    assert all(torch.equal(a, bare.run(sysm, SET, b).latents) for a, b in zip(out, bare.batches(SET)))


def test_merge_rejects_a_missing_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a result store folder"):
        merge([tmp_path / "nope"], tmp_path / "out")


def test_a_torn_file_is_recomputed(store, ctx):
    sysm = reference_system()
    batch = next(ctx.batches(SET))
    ctx.run(sysm, SET, batch)
    f = next(store.root.glob("*/*.safetensors"))
    f.write_bytes(f.read_bytes()[:20])
    store.hits = 0
    with pytest.warns(StoreWarning, match="truncated"):
        ctx.run(sysm, SET, batch)
    assert store.hits == 0 and store.misses >= 1


def test_a_read_only_store_answers_has_and_refuses_get_and_put(tmp_path):
    """cos plan's store: `has` only; `get` (which claims a missing key) and `put` would change what the run finds."""
    ResultStore(tmp_path / "s").put("k1", {"x": 1})
    ro = ResultStore(tmp_path / "s", readonly=True)
    before = sorted(p.name for p in (tmp_path / "s").rglob("*"))
    assert ro.has("k1") and not ro.has("k2")
    for call in (lambda: ro.get("k2"), lambda: ro.get("k1"), lambda: ro.put("k3", {"x": 3})):
        with pytest.raises(RuntimeError, match="read-only"):
            call()
    assert sorted(p.name for p in (tmp_path / "s").rglob("*")) == before


def test_a_frozen_tensors_hash_is_reused_until_it_changes_and_no_other_is_cached():
    # a capture named by many keys (swap_flip swaps each block's update in turn) is hashed once, not per key
    from cos.store import _FROZEN, freeze

    t = torch.randn(4, 8)
    freeze(t)
    first = fingerprint(t)
    stamp, _ = _FROZEN[t]
    _FROZEN[t] = (stamp, "planted")                 # reuse is observable: the kept digest is what comes back
    assert fingerprint(t)["tensor"] == "planted"
    t.mul_(2)                                       # an in-place change bumps the version: hashed again
    assert fingerprint(t)["tensor"] not in ("planted", first["tensor"])
    u = torch.randn(4, 8)
    view = u[1]
    freeze(view)
    before = fingerprint(view)
    u[1, 0] += 1                                    # a write through the base reaches the view's version too
    assert fingerprint(view) != before
    # not frozen: hashed every time, so a write the version counter does not see (numpy) still changes the key
    plain = torch.zeros(3)
    k0 = fingerprint(plain)
    plain.numpy()[0] = 1.0
    assert fingerprint(plain) != k0 and plain not in _FROZEN
    # a copy of a frozen tensor is not frozen (the cache is off the tensor: pickling or copying carries nothing)
    import copy
    import pickle
    assert copy.deepcopy(t) not in _FROZEN and pickle.loads(pickle.dumps(t)) not in _FROZEN
    with torch.inference_mode():
        inf = torch.ones(3)                         # no version counter: hashed every time, never cached
    freeze(inf)
    assert fingerprint(inf)["tensor"] == fingerprint(torch.ones(3))["tensor"] and _FROZEN[inf] is None


def test_a_capture_is_frozen_when_its_session_closes():
    from cos.store import _FROZEN

    cap = CaptureBlocks(blocks=[0], steps=[0])
    cap.store = {(0, 0, "cond"): torch.ones(2)}
    cap.close()
    assert all(v in _FROZEN for v in cap.store.values())
