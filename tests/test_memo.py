"""The session's memo of shared runs (`RunContext.remember`): least recently used out, bounded by bytes and count."""
from __future__ import annotations

import threading

import torch

import cos.runner as runner
from cos.runner import RunContext, tensor_bytes


def test_tensor_bytes_counts_each_storage_once():
    a = torch.zeros(10, dtype=torch.float32)
    assert tensor_bytes(a) == 40
    assert tensor_bytes({"x": a, "y": [a, a[:5]], "z": (torch.zeros(3, dtype=torch.float64),)}) == 40 + 24
    assert tensor_bytes("not a tensor") == 0


def test_remember_computes_once_and_evicts_least_recently_used(monkeypatch):
    monkeypatch.setattr(runner, "MEMO_BYTES", 100)      # 2 entries of 40 bytes fit, a third does not
    ctx, calls = RunContext(progress=False), []

    def make(name):
        def compute():
            calls.append(name)
            return torch.zeros(10)
        return compute

    a = ctx.remember("a", make("a"))
    assert ctx.remember("a", make("a")) is a and calls == ["a"]
    ctx.remember("b", make("b"))
    ctx.remember("a", make("a"))        # a used last: b is the least recently used
    ctx.remember("c", make("c"))
    assert list(ctx._memo) == ["a", "c"] and ctx.memo_held == 80
    ctx.remember("b", make("b"))        # b was evicted: computed again
    assert calls == ["a", "b", "c", "b"] and list(ctx._memo) == ["c", "b"]


def test_remember_keeps_the_newest_entry_even_over_the_budget(monkeypatch):
    monkeypatch.setattr(runner, "MEMO_BYTES", 10)
    ctx = RunContext(progress=False)
    ctx.remember("small", lambda: torch.zeros(1))
    big = ctx.remember("big", lambda: torch.zeros(100))
    assert list(ctx._memo) == ["big"] and ctx.memo_held == 400
    assert ctx.remember("big", lambda: None) is big


def test_remember_bounds_the_entry_count(monkeypatch):
    monkeypatch.setattr(runner, "MEMO_ENTRIES", 3)
    ctx = RunContext(progress=False)
    for k in range(5):
        ctx.remember(k, lambda k=k: k)      # no tensors: only the count bounds them
    assert list(ctx._memo) == [2, 3, 4] and ctx.memo_held == 0


def test_remember_from_two_threads_stores_one_value():
    ctx, gate = RunContext(progress=False), threading.Barrier(2)
    out = []

    def compute():
        gate.wait(timeout=10)       # both threads compute before either stores
        return torch.zeros(4)

    ts = [threading.Thread(target=lambda: out.append(ctx.remember("k", compute))) for _ in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(ctx._memo) == 1 and ctx.memo_held == 16 and len(out) == 2


def test_tensor_bytes_of_a_sample_result_served_without_its_state():
    from cos.sampler import SampleResult

    lat = torch.zeros(2, 3)
    res = SampleResult(lat, None, [0], [1.0], [1.0], {"x0": torch.zeros(1, 2, 3)})
    assert tensor_bytes(res) == 24 + 24


def test_tensor_bytes_counts_a_view_by_its_whole_storage_once():
    a = torch.zeros(10)
    assert tensor_bytes(a[5:]) == 40                  # an offset view keeps all of a alive
    assert tensor_bytes([a[5:], a[:2], a]) == 40      # and is the same storage as a


def test_tensor_bytes_of_a_sample_result_counts_its_sampler_state():
    from types import SimpleNamespace

    from cos.sampler import SampleResult

    lat = torch.zeros(2, 3)
    sched = SimpleNamespace(model_outputs=[torch.zeros(6), torch.zeros(6)], last_sample=torch.zeros(6), order=2)
    cond = SimpleNamespace(image=torch.zeros(1, 3, 2, 2), prompt_embeds=torch.zeros(1, 2))
    state = SimpleNamespace(latents=lat, condition=torch.zeros(3), last_x0=None, cond=cond, scheduler=sched)
    res = SampleResult(lat, state, [0], [1.0], [1.0], {"x0": torch.zeros(1, 2, 3)})
    # latents (24, the state's are the same storage) + condition 12 + history 3 x 24 + cond 48 + 8 + x0 24
    assert tensor_bytes(res) == 24 + 12 + 72 + 56 + 24


def test_entries_exactly_at_the_budget_stay_and_sizes_follow_the_entries(monkeypatch):
    monkeypatch.setattr(runner, "MEMO_BYTES", 80)
    ctx = RunContext(progress=False)
    for k in "ab":
        ctx.remember(k, lambda: torch.zeros(10))
    assert list(ctx._memo) == ["a", "b"] and ctx.memo_held == 80        # at the budget, not over it
    ctx.remember("c", lambda: torch.zeros(10))
    assert list(ctx._memo) == ["b", "c"] and set(ctx._memo_sizes) == {"b", "c"} and ctx.memo_held == 80
