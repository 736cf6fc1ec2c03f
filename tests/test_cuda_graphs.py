"""--cos-cuda-graphs (cos.models.graphs): a block replays its CUDA graph only while nothing the graph cannot see has
changed, the eager forward runs everywhere else, and the model is the same model (state dict, copies, restore).
The CUDA cases (replays equal the eager forward, interventions and captures see the replayed outputs, weights
replaced in place or swapped, LoRA layers) skip without a CUDA device."""
from __future__ import annotations

import copy

import pytest
import torch

from cos.interventions.capture import CaptureBlocks
from cos.models.graphs import GraphedForward, disable_block_graphs, enable_block_graphs, graph_counts
from cos.pytest_plugin import DEFAULT_MODEL, use_cuda_graphs
from cos.sampler import Sampler
from tests.helpers import tiny_conditioning

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device: CUDA graphs are captured on it")


@pytest.fixture
def organism():
    from cos.models import load_system
    return load_system(DEFAULT_MODEL, device="cpu")


def _block(system):
    return system.experts[0].blocks[0]


def test_enabling_keeps_the_model_and_runs_eagerly_off_cuda(organism):
    keys = list(organism.experts[0].state_dict())
    cond = tiny_conditioning(batch=2)
    ref = Sampler(organism).sample(cond, [1, 2], 3).latents
    wrappers = enable_block_graphs(organism.experts)
    assert len(wrappers) == len(organism.experts[0].blocks) and list(organism.experts[0].state_dict()) == keys
    assert enable_block_graphs(organism.experts) == wrappers           # enabling twice wraps nothing twice
    out = Sampler(organism).sample(cond, [1, 2], 3).latents
    assert torch.equal(out, ref)
    c = graph_counts(wrappers)
    assert c["captures"] == c["replays"] == 0 and c["eager_calls"] > 0
    disable_block_graphs(organism.experts)
    assert all("forward" not in b.__dict__ for b in organism.experts[0].blocks)


def test_what_the_graph_cannot_see_runs_eagerly(organism):
    gf = GraphedForward(_block(organism))
    base = gf._structure()
    assert base is not None and gf._structure() == base                # stable while nothing changes
    h = _block(organism).attn1.register_forward_hook(lambda *a: None)  # a hook inside the block
    assert gf._structure() is None
    h.remove()
    h = torch.nn.modules.module.register_module_forward_hook(lambda *a: None)   # a global hook
    assert gf._structure() is None
    h.remove()
    _block(organism).ffn.train()
    assert gf._structure() is None
    _block(organism).ffn.eval()
    assert gf._structure() == base
    lin = _block(organism).ffn.net[2]
    lin.weight = torch.nn.Parameter(lin.weight.detach().clone())          # weights replaced: another graph
    assert gf._structure() not in (None, base)


def test_a_peft_layer_inside_a_block_runs_eagerly(organism):
    peft = pytest.importorskip("peft")
    from peft import LoraConfig, inject_adapter_in_model
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["to_q"]), _block(organism))
    assert any(type(m).__module__.startswith(peft.__name__) for m in _block(organism).modules())
    assert GraphedForward(_block(organism))._structure() is None


def test_a_copied_model_gets_its_own_wrappers(organism):
    enable_block_graphs(organism.experts)
    twin = copy.deepcopy(organism.experts[0])
    gf = twin.blocks[0].__dict__["forward"]
    assert isinstance(gf, GraphedForward) and gf.block is twin.blocks[0] and gf.eager.__self__ is twin.blocks[0]


class _Opts:
    def __init__(self, **o):
        self.o = {"--cos-cuda-graphs": "auto", "--cos-compile": False, "--cos-tier": "auto", "--cos-model": None,
                  "--cos-device": "auto", **o}

    def getoption(self, k):
        return self.o[k]


def test_the_option_resolves_and_refuses_in_one_line():
    import pytest as _pytest
    assert use_cuda_graphs(_Opts(**{"--cos-tier": "gpu"}), "cuda") is True
    assert use_cuda_graphs(_Opts(**{"--cos-tier": "full"}), "cuda") is False
    assert use_cuda_graphs(_Opts(**{"--cos-tier": "cpu"}), "cpu") is False
    assert use_cuda_graphs(_Opts(**{"--cos-tier": "gpu", "--cos-compile": True}), "cuda") is False
    assert use_cuda_graphs(_Opts(**{"--cos-cuda-graphs": "off", "--cos-tier": "gpu"}), "cuda") is False
    assert use_cuda_graphs(_Opts(**{"--cos-cuda-graphs": "on", "--cos-tier": "full"}), "cuda:0") is True
    with _pytest.raises(_pytest.UsageError, match="--cos-cuda-graphs on: needs a CUDA device, the run is on 'cpu'"):
        use_cuda_graphs(_Opts(**{"--cos-cuda-graphs": "on"}), "cpu")
    with _pytest.raises(_pytest.UsageError, match="not with --cos-compile"):
        use_cuda_graphs(_Opts(**{"--cos-cuda-graphs": "on", "--cos-compile": True}), "cuda")


# ------------------------------------------------------------------ on a CUDA device
def _run(system, cond, seeds, steps, capture=None):
    s = Sampler(system)
    ivs = [capture] if capture is not None else []
    return s.sample(cond, seeds, steps, interventions=ivs, record=("x0",))


@cuda
def test_replays_equal_the_eager_forward_and_captures_see_them(organism):
    sysm = organism.to("cuda")
    cond = tiny_conditioning(batch=3)
    cap_e = CaptureBlocks(blocks=[2, 5], steps=[0, 3])
    eager = _run(sysm, cond, [4, 5, 6], 6, cap_e)
    eager_plain = _run(sysm, cond, [4, 5, 6], 6)
    wrappers = enable_block_graphs(sysm.experts)
    cap_g = CaptureBlocks(blocks=[2, 5], steps=[0, 3])
    graphed = _run(sysm, cond, [4, 5, 6], 6, cap_g)
    graphed_plain = _run(sysm, cond, [4, 5, 6], 6)
    c = graph_counts(wrappers)
    assert c["captures"] >= len(wrappers) and c["replays"] > c["captures"]
    for a, b in ((eager, graphed), (eager_plain, graphed_plain)):
        torch.testing.assert_close(b.latents, a.latents, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(b.trajectory["x0"], a.trajectory["x0"], rtol=1e-5, atol=1e-5)
    assert set(cap_g.store) == set(cap_e.store)
    for k in cap_e.store:   # each capture its own copy: later replays did not overwrite what was captured
        torch.testing.assert_close(cap_g.store[k], cap_e.store[k], rtol=1e-5, atol=1e-5)
    assert len({cap_g.store[k].data_ptr() for k in cap_g.store}) == len(cap_g.store)


@cuda
def test_weights_changed_in_place_or_replaced_reach_the_replay(organism):
    sysm = organism.to("cuda")
    cond = tiny_conditioning(batch=2)
    wrappers = enable_block_graphs(sysm.experts)
    before = _run(sysm, cond, [1, 2], 4).latents
    lin = _block(sysm).ffn.net[2]
    with torch.no_grad():
        lin.weight.mul_(1.5)                                   # in place: the graph reads the same storage
    in_place = _run(sysm, cond, [1, 2], 4).latents
    disable_block_graphs(sysm.experts)
    torch.testing.assert_close(in_place, _run(sysm, cond, [1, 2], 4).latents, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(in_place, before)
    wrappers = enable_block_graphs(sysm.experts)
    lin.weight = torch.nn.Parameter(lin.weight.detach() * 0.5)  # replaced: a new capture, not the stale graph
    captures = graph_counts(wrappers)["captures"]
    replaced = _run(sysm, cond, [1, 2], 4).latents
    assert graph_counts(wrappers)["captures"] > captures
    disable_block_graphs(sysm.experts)
    torch.testing.assert_close(replaced, _run(sysm, cond, [1, 2], 4).latents, rtol=1e-5, atol=1e-5)


@cuda
def test_hooks_inside_a_block_run_and_see_eager_outputs(organism):
    sysm = organism.to("cuda")
    cond = tiny_conditioning(batch=2)
    wrappers = enable_block_graphs(sysm.experts)
    seen = []
    h = _block(sysm).attn1.register_forward_hook(lambda m, a, o: seen.append(1))
    _run(sysm, cond, [1, 2], 3)
    h.remove()
    assert seen and wrappers[0].eager_calls > 0 and wrappers[0].captures == 0
