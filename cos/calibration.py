"""`cos validate`: each claim's power and false-positive rate, measured on its own controls.

Every claim's controls (cos.registry.Control) are rerun over draws 1..N: independent task instances and noise
seeds (and weight seeds for random models), so a draw is a fresh repetition of the control at the tier's sizes.
Draw 0 (the default test tier's) is left out so the calibration is not conditioned on the draw the tests pin.
Per control: how often the claim came out `holds`, with a Wilson interval. For a claim: its power is that of
its weakest positive control, its false-positive rate that of its most permissive *noisy* negative control (one
bad control is not averaged away; a null whose effect is identically 0 on every draw cannot be a false positive,
so it is listed as `exact_zero_nulls` and not counted: a claim with no noisy null has no FPR and misses the goal); `sensitivity` controls (the effect planted at the paper's size or smaller) are
reported beside, undecided. The minimum detectable effect is the median over the planted draws of what each
run reported from its own interval (cos.stats.detectable).

Each finished draw is appended to DIR/draws.jsonl keyed by (tier, claim, version, control, draw): a killed
validation loses nothing finished and a rerun computes only what is missing. With `sequential` (`cos validate
--sequential on`) every draw decides at looks as `--cos-sequential on` does (cos.sequential: at most `LOOKS`,
α-spending, futility), so power and FPR count the looks; its record adds the batches it used of its maximum and
its key ends in "|seq" (draws with and without looks never pool); the summary adds per claim the mean share of
the batches used (`n_fraction`) on the positive, null and sensitivity controls. With `--jobs J` > 1 the draws
run in J worker processes, each with one torch thread; with 1, in this process, whose threads are left alone.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path
from typing import Iterable

import numpy as np

SCHEMA = "cos.calibration/1"
GOAL_POWER, GOAL_FPR, MIN_DRAWS = 0.9, 0.05, 20
# the GPU tier's statistics (cos.settings.TIERS["gpu"]) over the CPU tier's: instances per task 32 vs 4
TIER_SCALE = {"cpu": 1, "gpu": 4}


def _check_tier(tier: str) -> None:
    if tier not in TIER_SCALE:
        from cos.errors import InputError

        raise InputError(f"--tier {tier!r}: expected one of {sorted(TIER_SCALE)}")


def tier_settings(settings, tier: str):
    """A control's settings at a tier: the CPU tier is the control as written; the GPU tier runs `TIER_SCALE`
    times its instances (a claim's own sizing arguments, e.g. swapped blocks, are kept)."""
    _check_tier(tier)
    return settings if tier == "cpu" else replace(settings, instances=settings.instances * TIER_SCALE[tier])


N_FRACTION_TARGET = 0.5    # issue 24: the mean n a sequential run uses, as a share of its maximum, on average


def _key(tier: str, claim_id: str, version: int, control: str, draw: int, sequential: bool = False) -> str:
    return f"{tier}|{claim_id}|v{version}|{control}|{draw}" + ("|seq" if sequential else "")


def _rec_key(d: dict) -> str:
    """A record's key: a draw decided at looks (`"sequential": true`) is keyed apart from a fixed-n one."""
    return _key(d["tier"], d["claim"], d["version"], d["control"], d["draw"], d.get("sequential") is True)


def _one_thread() -> None:
    """Worker initializer: one torch thread per worker process (the workers share the cores)."""
    import torch

    torch.set_num_threads(1)


def layout(claim, model, settings, kw: dict) -> tuple[tuple, list] | None:
    """((settings, keyword arguments) the claim's `measure` hands `measure_records`, the units it samples under
    sequential looks) on `model`, or None where it does not get there without running (`cos.runner.records_call`).
    The units, not a control's own settings': several claims size their rows in `measure` (ensemble.mid_layers
    its seeds' rows, layers.swap_flip its instances)."""
    from cos.runner import RunContext, records_call

    call = records_call(claim, model, settings, True, None, **kw)
    if call is None:
        return None
    return call, RunContext(progress=False, sequential=True).units_of(claim, call[0], **call[1])


def unit_rows(claim, ctl, draw: int, model=None) -> list[int]:
    """The rows of each unit (batch) a sequential run of control `ctl` (at its tier's settings) samples at `draw`:
    `len()` is its maximum number of batches, and the looks fall after `cos.sequential.look_points(len())` of them.
    With the control's `model`, as the claim's `measure` sizes them (`layout`); without, or where that is not known
    without running, from the control's settings."""
    from cos.registry import at_draw
    from cos.runner import RunContext

    settings, kw = at_draw(ctl.settings, draw), dict(ctl.kwargs(draw)) if ctl.kwargs else {}
    lay = layout(claim, model, settings, kw) if model is not None else None
    units = lay[1] if lay else RunContext(progress=False, sequential=True).units_of(claim, settings, **kw)
    return [sum(len(b.instances) for _, b in unit) for unit in units]


def looks_of(details: dict | None, rows: list[int] | None) -> dict:
    """What a sequential draw used: `batches_used` of `batches_max`, the looks it had planned and those it took,
    why the last stopped it ("decided", "futile", "error"; None: it ran to its last look), and the rows of those
    batches (`rows`: each unit's, from `unit_rows`). From `details["sequential"]` when the claim had several
    looks; a claim whose batches form one unit has one look, at the end: it used all of them (their number from
    `rows`, None without)."""
    seq = (details or {}).get("sequential")
    if isinstance(seq, dict) and isinstance(seq.get("batches_used"), int) and isinstance(seq.get("batches_max"), int):
        used, most, hist = seq["batches_used"], seq["batches_max"], seq.get("looks") or []
        planned, looks = len(seq.get("looks_planned") or []) or None, len(hist)
        stop = (hist[-1].get("stop") or None) if hist else None
    else:
        used = most = len(rows) if rows else None
        planned, looks, stop = 1, 1, None
    fits = rows is not None and most == len(rows) and used is not None
    return {"batches_used": used, "batches_max": most, "looks_planned": planned, "looks": looks, "stop": stop,
            "rows_used": sum(rows[:used]) if fits else None, "rows_max": sum(rows) if fits else None}


def run_one(claim_id: str, control: str, draw: int, tier: str, sequential: bool = False) -> dict:
    """One control at one draw: the row's status, estimate, interval and sensitivity; with `sequential`, decided
    at looks, and what it used of its batches (`looks_of`)."""
    import torch

    from cos.registry import get_claim

    claim = get_claim(claim_id)
    ctl = next(c for c in claim.controls() if c.name == control)
    t0 = time.perf_counter()
    used = {}
    try:
        ctl = replace(ctl, settings=tier_settings(ctl.settings, tier))
        model = ctl.model(draw)
        r = ctl.run(claim, draw, sequential=sequential, model=model)
        ok = ctl.check is None or bool(ctl.check(r))
        det = (r.details or {}).get("detectable") or {}
        out = {"status": r.status, "measured": r.measured, "ci": [r.ci_low, r.ci_high], "n": r.n,
               "reason": r.reason, "check": ok, "mde": det.get("min_detectable_effect")}
        if sequential:
            try:
                rows = unit_rows(claim, ctl, draw, model)
            except Exception:   # noqa: BLE001 - the row stands; only the rows' count is then unknown
                rows = None
            used = looks_of(r.details, rows)
    except Exception as e:   # a control that crashes is an `error` draw, counted as not holding, and recorded
        out = {"status": "error", "measured": None, "ci": [None, None], "n": None,
               "reason": f"{type(e).__name__}: {e}"[:300], "check": False, "mde": None}
        if sequential:
            used = looks_of(None, None)
            used.update(looks_planned=None, looks=None)
    # a fixed-n draw's record is as it always was (no "sequential" key: off)
    seq = {"sequential": True, **used} if sequential else {}
    return {"claim": claim_id, "version": claim.spec.version, "control": control, "kind": ctl.kind, "draw": draw,
            "tier": tier, "seconds": round(time.perf_counter() - t0, 2), "host": platform.node(),
            "torch": torch.__version__, **out, **seq}


MAX_DRAWS_BYTES = 1 << 30     # a draws.jsonl of 20 draws of every control is well under 1 MB
STATUSES = ("holds", "fails", "inconclusive", "skipped", "error")


def _num(v: object, none_ok: bool = True) -> bool:
    return (v is None and none_ok) or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _is_record(d: object) -> bool:
    """A draw record as `run_one` writes it (the fields summarize reads, with their types)."""
    return (isinstance(d, dict) and all(isinstance(d.get(k), str) for k in ("tier", "claim", "control"))
            and all(isinstance(d.get(k), int) and not isinstance(d.get(k), bool) for k in ("version", "draw"))
            and d.get("status") in STATUSES and isinstance(d.get("check"), bool) and _num(d.get("measured"))
            and _num(d.get("mde")) and _num(d.get("seconds"), none_ok=False)
            and isinstance(d.get("ci"), list) and len(d["ci"]) == 2 and all(_num(x) for x in d["ci"])
            and isinstance(d.get("sequential", False), bool)
            and all(d.get(k) is None or (isinstance(d[k], int) and not isinstance(d[k], bool) and d[k] >= 0)
                    for k in ("batches_used", "batches_max")))


def _read_text(path: Path, what: str) -> str:
    """A calibration file's text: a regular file of bounded size (a FIFO or a link to a device would hang)."""
    from cos.errors import InputError
    from cos.trust import read_regular

    try:
        return read_regular(path, MAX_DRAWS_BYTES).decode("utf-8", "replace")
    except FileNotFoundError:
        raise
    except OSError as e:
        raise InputError(f"{what}: {str(e) if str(path) in str(e) else f'{path}: {e.strerror or e}'}") from None


def read_draws(path: Path, mine, is_record, key, unparsed_are_bad: bool) -> tuple[dict[str, dict], list[int]]:
    """The lines `mine(line)` selects in a draws.jsonl (control draws and the gate's share the file), by
    `key(line)`, and the numbers of the selected lines `is_record` refuses. A line that is not JSON is skipped; it
    counts as bad only with `unparsed_are_bad` and not as the last line (a line cut short by a kill: rerun)."""
    done, bad = {}, []
    if path.exists():
        lines = _read_text(path, "draws").splitlines()
        for i, line in enumerate(lines, 1):
            try:
                d = json.loads(line)
            except json.JSONDecodeError:
                if unparsed_are_bad and i < len(lines) and line.strip():
                    bad.append(i)
                continue
            if not mine(d):
                continue
            if not is_record(d):
                bad.append(i)
                continue
            done[key(d)] = d
    return done, bad


def _load(path: Path, stream=None) -> dict[str, dict]:
    """The finished draws of a draws.jsonl by key. A line cut short by a kill is skipped silently (that draw is
    rerun); any other line that is not a draw record is skipped too, and said in one line on `stream`. The gate's
    lines (`cos validate --kind gate`, cos.gate_validate) share the file and are not read here."""
    gate = lambda d: isinstance(d, dict) and d.get("kind") == "gate"
    done, bad = read_draws(path, lambda d: not gate(d), _is_record, _rec_key, True)
    if bad and stream is not None:
        print(f"warning: {path}: {len(bad)} line(s) are not draw records (first: line {bad[0]}); skipped, those "
              "draws are rerun", file=stream)
    return done


def validate(out: Path, draws: int = MIN_DRAWS, tier: str = "cpu", jobs: int = 1, select: str | None = None,
             stream=sys.stderr, sequential: bool = False) -> dict:
    """Run every control of every claim (ids containing `select`, if given) over draws 1..`draws`, each decided at
    looks with `sequential`; write DIR/draws.jsonl, DIR/calibration.json and DIR/calibration.md; return the
    calibration document."""
    from cos.errors import InputError
    from cos.registry import all_claims

    _check_tier(tier)
    if draws < 1 or jobs < 1:
        raise InputError(f"--draws {draws} / --jobs {jobs}: must be positive integers")
    out.mkdir(parents=True, exist_ok=True)
    log = out / "draws.jsonl"
    done = _load(log, stream)
    claims = [c for c in all_claims() if select is None or select in c.id]
    plan = [(c.id, c.spec.version, k.name, d) for c in claims for k in c.controls() for d in range(1, draws + 1)]
    todo = [p for p in plan if _key(tier, *p, sequential) not in done]
    print(f"cos validate: {len(plan)} control draws ({len(claims)} claims, {draws} draws, tier {tier}"
          f"{', sequential looks' if sequential else ''}); {len(plan) - len(todo)} already in {log}", file=stream)
    t0, secs = time.perf_counter(), []
    with log.open("a") as f:
        if jobs > 1:
            with ProcessPoolExecutor(jobs, initializer=_one_thread) as pool:
                futs = [pool.submit(run_one, cid, ctl, d, tier, sequential) for cid, _, ctl, d in todo]
                for i, fut in enumerate(as_completed(futs), 1):
                    _record(f, done, fut.result(), secs, i, len(todo), t0, jobs, stream)
        else:
            for i, (cid, _, ctl, d) in enumerate(todo, 1):
                _record(f, done, run_one(cid, ctl, d, tier, sequential), secs, i, len(todo), t0, 1, stream)
    return _write(out, summarize([done[_key(tier, *p, sequential)] for p in plan], claims, draws, tier, jobs,
                                 time.perf_counter() - t0, sequential))


def _write(out: Path, doc: dict) -> dict:
    (out / "calibration.json").write_text(json.dumps(doc, indent=1))
    (out / "calibration.md").write_text(markdown(doc))
    return doc


def resummarize(out: Path, sequential: bool | None = None) -> dict:
    """Recompute DIR/calibration.json and .md from DIR/draws.jsonl with this version's rules, without running
    anything; the provenance of the run that made the draws is kept (and marked `resummarized`), its mode too:
    draws decided at looks when its `sequential` is true (a provenance without it: fixed n). Only the draws of
    its tier and mode are summarized (a folder may hold both modes' draws, keyed apart), and the provenance's
    draws_by_host and draw_seconds are those of the draws summarized. `sequential` (`--sequential` given with
    --summarize-only): refused when it is not the run's mode."""
    from cos.errors import InputError
    from cos.registry import all_claims

    cal = out / "calibration.json"
    try:
        old = json.loads(_read_text(cal, "--summarize-only")) if cal.exists() else None
    except json.JSONDecodeError as e:
        raise InputError(f"--summarize-only: {cal}: malformed JSON ({e.msg} at line {e.lineno})") from None
    recs = list(_load(out / "draws.jsonl", sys.stderr).values())
    if old is None or not recs:
        raise InputError(f"--summarize-only: {out} holds no calibration.json and draws.jsonl of an earlier run")
    p = old.get("provenance") if isinstance(old, dict) else None
    if not (isinstance(p, dict) and p.get("tier") in TIER_SCALE and _num(p.get("wall_s"), none_ok=False)
            and all(isinstance(p.get(k), int) and not isinstance(p.get(k), bool) and p[k] >= 1 for k in ("draws", "jobs"))
            and isinstance(p.get("sequential", False), bool)):
        raise InputError(f"--summarize-only: {cal}: not a calibration document of this cos (its provenance needs "
                         "tier, draws, jobs and wall_s, and sequential true or false if any)")
    seq = p.get("sequential", False)
    mode = lambda on: "on" if on else "off"
    if sequential is not None and sequential != seq:
        raise InputError(f"--sequential {mode(sequential)}: with --summarize-only it must be the mode of the run "
                         f"it resummarizes ({cal} says {mode(seq)}); leave it out to keep that mode")
    # the draws of the run's tier and mode only, before the claims are listed: a folder holding fixed-n draws of
    # one claim and sequential draws of another must not list the first, undrawn, in a sequential summary
    recs = [r for r in recs if r["tier"] == p["tier"] and (r.get("sequential") is True) == seq]
    if not recs:
        raise InputError(f"--summarize-only: {out / 'draws.jsonl'} holds no draws of tier {p['tier']} with "
                         f"--sequential {mode(seq)}, the run {cal} describes")
    ids = {r["claim"] for r in recs}
    claims = [c for c in all_claims() if c.id in ids]
    # draws of controls a claim no longer has (renamed, or a hand-edited line) cannot be summarized: left out
    known = {(c.id, k.name) for c in claims for k in c.controls()}
    recs = [r for r in recs if (r["claim"], r["control"]) in known]
    doc = summarize(recs, claims, p["draws"], p["tier"], p["jobs"], p["wall_s"], seq)
    # the draws themselves say which host and torch made them and how long they took (a resumed or partly
    # rerun folder mixes them), as resummarize_gate does
    doc["provenance"] = {**p, "sequential": seq, **({"looks_max": doc["provenance"]["looks_max"]} if seq else {}),
                         **{k: doc["provenance"][k] for k in ("draw_seconds", "draws_by_host")},
                         "resummarized": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    return _write(out, doc)


def _record(f, done, rec, secs, i, total, t0, jobs, stream) -> None:
    f.write(json.dumps(rec) + "\n")
    f.flush()
    done[_rec_key(rec)] = rec
    secs.append(rec["seconds"])
    elapsed = time.perf_counter() - t0
    # remaining work at the observed mean seconds per draw, spread over the workers
    eta = np.mean(secs) * (total - i) / jobs
    print(f"  [{i}/{total}] {rec['claim']} {rec['control']} draw {rec['draw']}: {rec['status']} "
          f"({rec['seconds']:.1f} s) · elapsed {elapsed:.0f} s · ETA {eta:.0f} s", file=stream, flush=True)


def _rate(recs: list[dict], kind: str) -> dict:
    """How often the claim held on a control's draws, with a Wilson interval. A positive (or sensitivity) draw
    counts as a detection when the row holds and the control's extra `check` passes. A negative draw counts as a
    false positive when the row holds, whatever its check says (a negative's check is a condition on the null,
    e.g. "exactly 0": passing it never excuses a `holds`); a negative draw whose check fails, or that was skipped
    or errored, did not test the null as designed and is counted apart (`off_design`), never as a pass."""
    from cos.stats import proportion_ci

    if kind == "negative":
        k = sum(r["status"] == "holds" for r in recs)
        off = sum(r["status"] != "holds" and (not r["check"] or r["status"] in ("skipped", "error")) for r in recs)
    else:
        k = sum(r["status"] == "holds" and r["check"] for r in recs)
        off = sum(r["status"] in ("skipped", "error") for r in recs)
    n = len(recs)
    e = proportion_ci(k, n)
    return {"draws": n, "holds": k, "rate": e.value, "ci": [e.ci_low, e.ci_high], "off_design": off,
            "errors": sum(r["status"] == "error" for r in recs),
            "statuses": dict(sorted(Counter(r["status"] for r in recs).items()))}


NOISE_FLOOR = 1e-6    # |effect| at or below this on every draw: the null is identically zero (float noise)


def noisy_null(recs: list[dict]) -> bool:
    """Whether a negative control's effect is noisy (zero in expectation, not identically): some draw measured
    an effect above float noise. A null that is exactly 0 on every draw cannot be a false positive."""
    return any(r["measured"] is not None and abs(r["measured"]) > NOISE_FLOOR for r in recs)


def _mean(xs: list[float]) -> float | None:
    return round(float(np.mean(xs)), 4) if xs else None


def n_fraction(recs: list[dict], kinds: dict[str, str]) -> dict | None:
    """The mean share of its maximum n a sequential draw used, batches_used / batches_max, over the draws of the
    positive, the negative ("null") and the sensitivity controls (`kinds`: control name -> kind); `rows`: the same
    in rows (a claim's last batch may be short, so the rows' share can differ); `multi_look_draws`: the draws that
    had more than one look planned (0: every control's batches form one unit, fixed n in effect). None when no
    draw recorded it."""
    kinds_ = ("positive", "negative", "sensitivity")
    fr, rows = {k: [] for k in kinds_}, {k: [] for k in kinds_}
    for r in recs:
        kind = kinds.get(r["control"])
        if kind in fr and isinstance(r.get("batches_used"), int) and r.get("batches_max"):
            fr[kind].append(r["batches_used"] / r["batches_max"])
            if isinstance(r.get("rows_used"), int) and r.get("rows_max"):
                rows[kind].append(r["rows_used"] / r["rows_max"])
    if not any(fr.values()):
        return None
    name = {"positive": "positive", "negative": "null", "sensitivity": "sensitivity"}
    return {**{name[k]: _mean(v) for k, v in fr.items()},
            "draws": {name[k]: len(v) for k, v in fr.items()},
            "rows": {name[k]: _mean(v) for k, v in rows.items()},
            "multi_look_draws": sum(isinstance(r.get("looks_planned"), int) and r["looks_planned"] > 1 for r in recs)}


def summarize(recs: Iterable[dict], claims, draws: int, tier: str, jobs: int, wall_s: float,
              sequential: bool = False) -> dict:
    """The calibration document from the draws' records (wall_s: this invocation's; draw_seconds: the draws'
    own times summed, whichever invocation ran them). `sequential`: the draws were decided at looks; a claim whose
    draws recorded their batches gets `n_fraction`, and the document the mean of those over claims."""
    import torch

    import cos

    recs = list(recs)
    by = {}
    for r in recs:
        by.setdefault(r["claim"], {}).setdefault(r["control"], []).append(r)
    out = {}
    for c in claims:
        ctl = {k.name: k for k in c.controls()}
        per = {name: {"kind": ctl[name].kind, "why": ctl[name].why, **_rate(rs, ctl[name].kind)}
               for name, rs in by.get(c.id, {}).items()}
        for name, v in per.items():
            if v["kind"] == "negative":
                v["noisy"] = noisy_null(by[c.id][name])
        pos = [v for v in per.values() if v["kind"] == "positive"]
        # the false-positive rate is measured on noisy nulls only: a null whose effect is identically zero (an
        # oracle's exact 0) can never come out `holds`, so its 0/N says nothing about the claim's error rate
        neg = [v for v in per.values() if v["kind"] == "negative" and v["noisy"]]
        planted = min(pos, key=lambda v: v["rate"]) if pos else None
        null = max(neg, key=lambda v: v["rate"]) if neg else None
        mdes = [r["mde"] for name, rs in by.get(c.id, {}).items() if per[name]["kind"] == "positive"
                for r in rs if r["mde"] is not None]
        # a control that crashed on some draw has not been calibrated, whatever its other draws say
        crashed = any(v["errors"] for v in per.values() if v["kind"] != "sensitivity")
        meets = bool(planted and null and planted["rate"] >= GOAL_POWER and null["rate"] <= GOAL_FPR
                     and planted["draws"] >= MIN_DRAWS and not crashed)
        # the goal shown by the intervals themselves: 0 misses needs 35 draws for a Wilson low > 0.9, 0 false
        # positives 73 draws for a Wilson high < 0.05
        shown = bool(planted and null and planted["ci"][0] >= GOAL_POWER and null["ci"][1] <= GOAL_FPR and not crashed)
        exact = sorted(n for n, v in per.items() if v["kind"] == "negative" and not v["noisy"])
        out[c.id] = {"version": c.spec.version, "threshold": c.spec.threshold, "direction": c.spec.direction,
                     "exact_zero_nulls": exact,
                     "planted": planted and {k: planted[k] for k in ("draws", "holds", "rate", "ci")},
                     "null": null and {k: null[k] for k in ("draws", "holds", "rate", "ci")},
                     "off_design_draws": {n: v["off_design"] for n, v in per.items() if v["off_design"]},
                     "min_detectable_effect": float(np.median(mdes)) if mdes else None,
                     "meets_goal": meets, "goal_shown_by_interval": shown, "controls": per}
        nf = n_fraction([r for rs in by.get(c.id, {}).values() for r in rs], {n: v.kind for n, v in ctl.items()})
        if nf is not None:      # draws decided at looks only: a fixed-n claim's entry is as it always was
            out[c.id]["n_fraction"] = nf
    doc = {"schema": SCHEMA, "claims": out,
           "goal": {"power": GOAL_POWER, "false_positive_rate": GOAL_FPR, "min_draws": MIN_DRAWS}}
    if sequential:
        from cos import sequential as seq

        fr = [c["n_fraction"] for c in out.values() if c.get("n_fraction")]
        doc["n_fraction"] = {"positive": _mean([f["positive"] for f in fr if f["positive"] is not None]),
                             "null": _mean([f["null"] for f in fr if f["null"] is not None]),
                             "claims": len(fr), "target": N_FRACTION_TARGET}
        looks = {"looks_max": seq.LOOKS}
    else:
        looks = {}
    return {**doc,
            "provenance": {"cos": getattr(cos, "__version__", None), "torch": torch.__version__, "tier": tier,
                           "sequential": sequential, **looks,
                           "draws": draws, "jobs": jobs, "wall_s": round(wall_s, 1),
                           "draw_seconds": round(sum(r["seconds"] for r in recs), 1),
                           # a resumed calibration may hold draws of several machines: which made how many
                           "draws_by_host": dict(Counter(f"{r.get('host', 'unrecorded')} (torch {r.get('torch', '?')})"
                                                         for r in recs)), "machine": platform.node(),
                           "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}}


def _pct(v: dict | None) -> str:
    if not v:
        return "–"
    return f"{v['holds']}/{v['draws']} = {v['rate']:.2f} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"


def _f(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def _used(nf: dict | None) -> str:
    if not nf:
        return "–"
    return f"{_f(nf['positive'])} / {_f(nf['null'])}" + ("" if nf.get("multi_look_draws") else " (one look)")


def _met(nf: dict) -> bool:
    vals = [v for v in (nf["positive"], nf["null"]) if v is not None]
    return bool(vals) and all(v <= nf["target"] for v in vals)


def markdown(doc: dict) -> str:
    """The calibration table: per claim, power (weakest positive control) and false-positive rate (most permissive
    negative control) with Wilson 95% intervals, the sensitivity controls, the median MDE; then every control."""
    from tabulate import tabulate

    g, p = doc["goal"], doc["provenance"]
    seq = p.get("sequential") is True
    rows, ctl_rows = [], []
    for cid, c in doc["claims"].items():
        sens = [f"{n}: {v['holds']}/{v['draws']}" for n, v in c["controls"].items() if v["kind"] == "sensitivity"]
        mde = c["min_detectable_effect"]
        rows.append([cid, _pct(c["planted"]), _pct(c["null"]) if c["null"] else "no noisy null",
                     "; ".join(sens) or "–",
                     "–" if mde is None else f"{mde:.3g}", "yes" if c["meets_goal"] else "no",
                     "yes" if c.get("goal_shown_by_interval") else "no"]
                    + ([_used(c.get("n_fraction"))] if seq else []))
        for n, v in c["controls"].items():
            kind = v["kind"] + ("" if v["kind"] != "negative" else " (noisy)" if v.get("noisy") else " (exact 0)")
            ctl_rows.append([cid, n, kind, _pct(v), ", ".join(f"{k} {m}" for k, m in v["statuses"].items()),
                             v["off_design"] or ""])
    head = (f"Calibration, tier `{p['tier']}`: {p['draws']} independent draws per control (draws 1..{p['draws']}), "
            f"{p['jobs']} worker(s), {p['wall_s']:.0f} s on {p['machine']} ({p['cpus']} CPUs), torch {p['torch']}, "
            f"{p['date']}; draws by host: {p.get('draws_by_host', {})}. Goal: power ≥ {g['power']} and false-positive rate ≤ {g['false_positive_rate']} with "
            f"≥ {g['min_draws']} draws ('goal met': point estimates; 'by CI': the Wilson interval itself lies within "
            "the goal, which needs ≥ 35 draws without a miss and ≥ 73 without a false positive). Power: the weakest "
            "positive control; FPR: the most permissive noisy negative control (a null identically 0 on every draw, "
            "marked 'exact 0', cannot be a false positive and is not counted); Wilson 95% intervals. MDE: median minimum detectable effect (80% power) the planted runs "
            "reported from their own intervals, in the claim's units.\n\n")
    if seq:
        head = head[:-2] + (
            f" Sequential looks on: every draw decided as `--cos-sequential on` decides, at up to "
            f"{p.get('looks_max', '?')} looks per claim (Lan-DeMets O'Brien-Fleming α-spending, non-binding "
            "futility; cos.sequential), so power and FPR count the looks: a draw is the decision it stopped at. "
            "'mean n used': the mean share of its batches a draw ran (batches used / batches max), over the "
            "positive and over the negative controls' draws; a control whose batches form one unit has a single "
            "look and uses all of them ('one look': no draw of the claim had more than one planned). The null "
            "share counts every negative control's draws, the exact-0 nulls too (which the FPR column leaves "
            "out). MDE: measured where each planted draw stopped, not at its full n.\n\n")
    nf = doc.get("n_fraction") if seq else None
    overall = "" if nf is None else (
        f"\n\nMean n used across the {nf['claims']} claim(s) whose draws recorded it: positives "
        f"{_f(nf['positive'])}, nulls {_f(nf['null'])} (issue 24's target: ≤ {nf['target']} on average; "
        f"{'met' if _met(nf) else 'not met'}).")
    return (head + tabulate(rows, headers=["claim", "power (planted holds)", "FPR (null holds)", "sensitivity",
                                           "MDE", "goal met", "by CI"] + (["mean n used (pos / null)"] if seq else []),
                            tablefmt="github") + overall
            + "\n\nEvery control:\n\n"
            + tabulate(ctl_rows, headers=["claim", "control", "kind", "holds / draws [95% CI]", "statuses",
                                          "off design (check failed, skipped, error)"],
                       tablefmt="github") + "\n")
