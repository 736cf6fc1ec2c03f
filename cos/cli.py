"""`cos`: the command line for what is not a test.

    cos run --model DIR --out DIR [...]     run every registered claim on a model (pytest underneath)
    cos gate --model NEW --against OLD --out DIR [...]   each claim's paired change NEW − OLD; exit 1 on a regression
    cos conclude RUN_DIR                    recompute a run's table from its records.jsonl (no model, no sampling)
    cos list [--format markdown]            the registered claims (markdown: docs/claims.md, generated)
    cos plan [--store DIR | --out DIR] [...]  per claim n, GPU-hours, power; with a store, the GPU-hours left
    cos new-claim ID                        write a claim module's skeleton (docs/adding-a-claim.md)
    cos baseline add|update RUN --into B    copy a run's rows into a baseline file (never by hand)
    cos report RUN_DIR                      re-render the report beside RUN_DIR/claims-status.json
    cos status STATUS.json [--compare B]    print the table; with --compare, what changed against B
    cos compare RUN_A RUN_B --out DIR       two runs side by side (statuses, paired differences, figures)
    cos history DIR                         the runs a --cos-out folder holds (the latest and DIR/history/*)
    cos trace --task maze --seed 3          one x̂0 filmstrip of a task on a model (PNG)
    cos merge STORE... --into DEST          unite result stores of sharded runs
    cos validate --out DIR [--draws N]      each claim's power and false-positive rate on its controls
                 [--kind gate]              ... or the gate's (cos gate) on pairs of them
    cos vbvr score|baselines --data DIR ... VBVR-Bench scores with VBVR-EvalKit (cos.vbvr_eval)
    cos train / cos evaluate ...            the organism's training and held-out evaluation
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cos.errors import CosError, InputError

class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one line (exit 2 through main), not usage plus a message."""

    def error(self, message: str) -> None:  # type: ignore[override]
        raise InputError(f"{message} (see {self.prog} --help)")


TABLE_FORMATS = ["simple", "github", "plain", "grid", "pipe", "rst", "html", "latex", "tsv"]


def _list(a) -> None:
    from tabulate import tabulate

    from cos.registry import all_claims

    if a.format == "markdown":   # docs/claims.md: the claims' specs, rules, controls and docstrings
        from cos.scaffold import claims_markdown

        print(claims_markdown(), end="")
        return
    rows = [(c.id, c.spec.version, c.spec.paper_ref, f"{c.spec.direction} {c.spec.threshold:g}",
             ", ".join(f"{k.kind} {k.name}" for k in c.controls()), c.spec.title) for c in all_claims()]
    print(tabulate(rows, headers=["claim", "version", "paper", "holds when CI", "controls", "title"], tablefmt=a.format))


def _plan(a) -> None:
    """cos plan: the run's cost and power per claim before it runs (cos.plan)."""
    import fnmatch
    import json
    from dataclasses import replace

    from cos.sequential import LOOKS, resolve
    from cos.validation import check_looks

    if a.gpus < 1:
        raise InputError(f"--gpus {a.gpus}: must be at least 1")
    looks = check_looks("--looks", a.looks) if a.looks is not None else LOOKS
    if a.seconds_per_forward is not None and not a.seconds_per_forward > 0:
        raise InputError(f"--seconds-per-forward {a.seconds_per_forward}: must be a positive number of seconds")
    from cos.pytest_plugin import DEFAULT_MODEL

    model = Path(a.model) if a.model else DEFAULT_MODEL
    if not model.exists():
        raise InputError(f"--model {model}: no such directory")
    from cos import plan as planning     # scipy: after the checks that need none

    try:
        pilot = planning.load_pilot(a.pilot) if a.pilot else None
    except ValueError as e:
        raise InputError(str(e)) from None
    from cos.models import load_system    # torch: once the model is there to load
    from cos.models.loading import run_dtype
    from cos.registry import all_claims
    from cos.settings import TIERS, settings_for

    device = a.device if a.device != "auto" else ("cuda" if _cuda() else "cpu")
    tier = a.tier if a.tier != "auto" else ("cpu" if device == "cpu" and (model / "cos_model.json").exists() else
                                             "gpu" if (model / "cos_model.json").exists() else "full")
    claims = [c for c in all_claims() if not a.k or any(fnmatch.fnmatch(c.id, f"*{k}*") for k in a.k.split(","))]
    if not claims:
        raise InputError(f"-k {a.k!r}: matches no claim")
    store, store_path, store_note = _plan_store(a, tier)      # a bad path: one line before the model loads
    spf, sequential = a.seconds_per_forward, resolve(a.sequential, tier)
    if a.looks is not None and not sequential:      # the tier decides it: refused before the model loads
        raise InputError(f"--looks {a.looks!r}: only with sequential decisions (--sequential on; auto is off at the "
                         f"{tier} tier)")
    system = load_system(model, device=device, dtype=run_dtype(model, device))     # the run's dtype: its keys
    settings = settings_for(system, tier) if tier != "full" else TIERS["full"]
    if a.instances:     # as the run's --cos-instances: the store keys hold the cap
        settings = replace(settings, instances=a.instances, instance_cap=a.instances)
    if spf is None:
        from cos.runner import time_forward

        timing = time_forward(system, settings)
        spf = timing["seconds_per_row_forward"]
    else:               # nothing timed: the host readouts are not priced
        timing = {"seconds_per_row_forward": spf, "readout_seconds": {}}
    left = None
    if store is not None:
        from cos.parallel import World
        from cos.runner import RunContext

        # priced as the run over --gpus processes would be: a launch is a world of ranks that meet
        ctx = RunContext(store=store, progress=False, sequential=sequential, looks=looks,
                         world=World(size=a.gpus, connected=a.gpus > 1))
        left = planning.left_to_run(ctx, system, settings, claims, timing, pilot)
    p = planning.plan(system, settings, claims, spf, a.gpus, pilot, sequential, pilot_name=a.pilot or "",
                      left=left, store=store_path or "", looks=looks)
    p["model"], p["timed"] = str(model), a.seconds_per_forward is None
    print(f"cos plan: {model} at the {tier} tier, {spf:.4g} s per row-forward"
          f" ({'timed warm forward on ' + device if a.seconds_per_forward is None else 'given'}), {a.gpus} GPU(s), "
          f"sequential {'on, ' + str(looks) + ' looks' if p['sequential'] else 'off'}"
          + (f", pilot {a.pilot}" if a.pilot else ", no pilot"))
    print(planning.table(p))
    for line in (planning.store_line(p), store_note):
        if line:
            print(line)
    if a.json:
        Path(a.json).write_text(json.dumps(p, indent=2, default=str))


STORE_RULE = ("must be an existing, readable folder: a run's result store (its --cos-store, or <cos-out>/cos-store; "
              "cos plan --out DIR reads DIR/cos-store)")


def _plan_store(a, tier: str) -> tuple[object | None, str | None, str]:
    """The result store `cos plan` prices against, opened only to look (`ResultStore(readonly=True)`): --store, or
    <--out>/cos-store where the run would keep one (`cos.store.run_store`, the plugin's rule: on the full tier and
    over several GPUs; the organism's tiers keep none unless asked). (store or None, its path, a note to print).
    A path that is not a readable folder, or a key that does not open it: InputError, one line naming the option."""
    import os

    from cos.store import ResultStore, run_store

    if a.store is None and a.out is None:
        return None, None, ""
    flag = f"--store {a.store}" if a.store is not None else f"--out {a.out}"
    if a.store is None and Path(a.out).exists() and not Path(a.out).is_dir():
        raise InputError(f"{flag}: not a folder (the --cos-out of a run)")
    path = run_store(a.store, a.out or ".", tier, a.gpus > 1)
    if path is None:
        return None, None, ("" if a.store == "none" else f"{flag}: no result store (the {tier} tier keeps none "
                                                         "unless asked: --store DIR): priced with nothing stored")
    p = Path(path)
    if a.store is None and not p.exists():      # a run not made yet: nothing stored
        return None, None, f"{flag}: no {p} yet: priced with nothing stored"
    where = "" if a.store is not None else f"{p}: "
    if not p.is_dir():
        raise InputError(f"{flag}: {where}{'not a folder' if p.exists() else 'no such folder'}; {STORE_RULE}")
    if not os.access(p, os.R_OK | os.X_OK):
        raise InputError(f"{flag}: {where}unreadable (no read or search permission); {STORE_RULE}")
    try:
        return ResultStore(p, key_file=a.store_key, readonly=True), str(p), ""
    except CosError as e:       # a missing or unreadable key: the store cannot be read as this user's
        raise InputError(f"{flag}: {e}") from None


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_claims(model: str | None, out: str, baseline: str | None = None, extra: list[str] | None = None) -> int:
    """Run every registered claim through pytest (the installed entry point `cos/testing.py`), outside any
    project's own pytest configuration; returns pytest's exit code."""
    import os

    import pytest

    import cos.testing
    from cos.pytest_plugin import DEFAULT_MODEL

    if not model and not DEFAULT_MODEL.exists():   # every claim would skip and the run would "pass"
        raise InputError(f"--model: none given and no organism at {DEFAULT_MODEL} (cos runs from a source checkout "
                         "only there); name a model directory with --model DIR")
    Path(out).mkdir(parents=True, exist_ok=True)
    # --opt=value: a bare absolute path among pytest's arguments would move its rootdir to a common ancestor
    args = [cos.testing.__file__, "-m", "claims", "-c", os.devnull, "--rootdir", out, "-p", "no:cacheprovider",
            f"--cos-out={out}", *([f"--cos-model={model}"] if model else []),
            *([f"--cos-baseline={baseline}"] if baseline else []), *(extra or [])]
    rc = int(pytest.main(args))
    if rc == pytest.ExitCode.NO_TESTS_COLLECTED:
        print("cos run: no claim selected (a -k or -m that matches nothing?); nothing was run", file=sys.stderr)
    return rc


def gate_claims(model: str | None, against: str, out: str, extra: list[str] | None = None) -> int:
    """`cos gate`: `cos run` with --cos-against; exit 0 when no claim regressed, 1 when one did (or a claim
    errored), 2 on a usage error (cos.gate)."""
    import pytest

    rc = run_claims(model, out, None, [f"--cos-against={against}", *(extra or [])])
    gate = Path(out) / "gate.md"
    if gate.exists():
        print(f"cos gate: {gate}", file=sys.stderr)
    return {int(pytest.ExitCode.OK): 0, int(pytest.ExitCode.TESTS_FAILED): 1,
            int(pytest.ExitCode.USAGE_ERROR): 2}.get(rc, rc)


def _conclude(a) -> int:
    """cos conclude RUN_DIR: every row of the run recomputed from its records.jsonl, beside the row the run wrote;
    exit 1 when one differs (the records were not enough to conclude it)."""
    import math

    from tabulate import tabulate

    from cos.records import load_records
    from cos.registry import get_claim
    from cos.reporting import load_status

    run = Path(a.run)
    bundles = load_records(run)
    written = {c["id"]: c for c in load_status(run / "claims-status.json")["claims"]}
    rows, differ = [], []
    for cid, b in sorted(bundles.items()):
        claim = get_claim(cid)
        if claim.spec.version != b.version:
            rows.append((cid, f"v{b.version} recorded, v{claim.spec.version} installed: not recomputed", "", "", ""))
            continue
        try:
            r = b.conclude(claim)
        except (AttributeError, TypeError) as e:   # a conclusion that reads more of the model than its records
            rows.append((cid, f"not recomputable from records: {type(e).__name__}: {e}"[:120], "", "", ""))
            continue
        w = written.get(cid, {})
        same = (r.status == w.get("status") and all(
            (x is None and y is None) or (x is not None and y is not None and math.isclose(x, y, rel_tol=1e-9, abs_tol=1e-12))
            for x, y in ((r.measured, w.get("measured")), (r.ci_low, w.get("ci_low")), (r.ci_high, w.get("ci_high")))))
        if not same:
            differ.append(cid)
        rows.append((cid, r.status, "" if r.measured is None else f"{r.measured:.4g}",
                     "" if r.ci_low is None else f"[{r.ci_low:.4g}, {r.ci_high:.4g}]",
                     "same" if same else f"DIFFERS: run wrote {w.get('status')} {w.get('measured')}"))
    print(tabulate(rows, headers=["claim", "status", "measured", "CI", "against the run's row"], tablefmt=a.format))
    missing = sorted(set(written) - set(bundles))
    if missing:
        print(f"no records (not concluded from records, or skipped): {', '.join(missing)}")
    if differ:
        print(f"cos conclude: {len(differ)} row(s) differ from the run's: {', '.join(differ)}", file=sys.stderr)
    return 1 if differ else 0


def _report(a) -> None:
    from cos.report import write_report

    if not (Path(a.run_dir) / "claims-status.json").exists():
        raise CosError(f"{a.run_dir}: no claims-status.json in this folder")
    for p in write_report(a.run_dir):
        print(f"written: {p}")


def _compare(a) -> None:
    from cos.report import write_comparison

    for run in (a.run_a, a.run_b):
        if not (Path(run) / "claims-status.json").exists():
            raise CosError(f"{run}: no claims-status.json in this folder")
    for p in write_comparison(a.run_a, a.run_b, a.out):
        print(f"written: {p}")


def _settings_differences(base: dict, doc: dict) -> list[str]:
    """What differs between the sampling settings of the claims both files share (another tier, another size)."""
    before = {c["id"]: (c.get("details") or {}).get("settings") for c in base["claims"]}
    diffs: set[str] = set()
    for c in doc["claims"]:
        a, b = before.get(c["id"]), (c.get("details") or {}).get("settings")
        if isinstance(a, dict) and isinstance(b, dict):
            diffs.update(f"{k} {a.get(k)} vs {b.get(k)}" for k in ("steps", "instances", "seeds", "num_frames",
                                                                       "height", "width") if a.get(k) != b.get(k))
    return sorted(diffs)


def _status(a) -> int:
    from cos.registry import ClaimResult
    from cos.reporting import compare, load_status, render_table

    from cos.trust import read_regular

    for f in (a.status, a.compare):   # a FIFO or /dev/zero would hang the read; a huge file exhaust memory
        if f and Path(f).exists():     # a missing one: load_status says so
            read_regular(f, 256 << 20)
    doc = load_status(a.status)
    rows = []
    for i, c in enumerate(doc["claims"]):
        try:
            rows.append(ClaimResult.from_dict(c))
        except (TypeError, KeyError, ValueError) as e:
            raise CosError(f"{a.status}: claims[{i}] is not a claim row ({e})") from None
    labels, c = None, None
    if a.compare:
        base = load_status(a.compare)
        if base.get("schema") != doc.get("schema"):
            raise CosError(f"{a.compare}: schema {base.get('schema')!r} differs from {a.status}'s "
                           f"{doc.get('schema')!r}; compare files of one schema")
        diffs = _settings_differences(base, doc)
        if diffs:   # a baseline of another tier gives meaningless regressions: say so, still compare
            print(f"warning: {a.compare} was measured with other settings ({'; '.join(diffs)}): another tier?",
                  file=sys.stderr)
        c = compare(base, rows)
        labels = c["labels"]
        print(f"against {a.compare}: regressed {c['regressed'] or 'none'}; newly hold {c['newly_holds'] or 'none'}"
              + (f"; missing now {c['missing']}" if c["missing"] else ""))
    print(render_table(rows, a.format, labels))
    return 1 if c and c["regressed"] else 0


def _history(a) -> int:
    """cos history DIR: one line per run of a --cos-out folder, oldest first (cos.runs.history)."""
    from tabulate import tabulate

    from cos.runs import history

    if not Path(a.dir).is_dir():
        raise InputError(f"{a.dir}: no such folder (the --cos-out of a run)")
    runs = history(a.dir)
    if not runs:
        raise InputError(f"{a.dir}: holds no run (no claims-status.json, here or under {Path(a.dir) / 'history'})")
    order = ("holds", "fails", "inconclusive", "skipped", "error")
    rows = [(r["run"] + (" (partial)" if r["partial"] else ""), r["start_time"] or "–", r["model"] or "–",
             r["weights_hash"] or "–", r["tier"] or "–",
             ", ".join(f"{r['statuses'][k]} {k}" for k in (*order, *sorted(set(r["statuses"]) - set(order)))
                       if r["statuses"].get(k)))
            for r in runs]
    print(tabulate(rows, headers=["run", "started", "model", "weights", "tier", "statuses"], tablefmt=a.format))
    return 0


def _trace(a) -> None:
    from cos.validation import check_device, check_model, positive_int

    positive_int("--every", a.every)
    for flag in ("instance", "seed"):
        if getattr(a, flag) < 0:
            raise InputError(f"--{flag} {getattr(a, flag)}: must be 0 or more")
    check_device("--device", a.device)
    check_model("--model", a.model)
    from cos.models import load_system    # torch: after the checks that need none
    from cos.tasks import TASKS, make_instance
    from cos.trace import trace

    make_instance(a.task, 0)   # registers the tasks; an unknown task is a one-line InputError
    system = load_system(a.model, device=a.device)
    t = trace(system, a.task, instance=a.instance, seed=a.seed, split=a.split)
    out = a.out or f"trace-{a.task}-{a.instance}-s{a.seed}.png"
    print(f"written: {t.draw(out, every=a.every)} (final score {t.final_score:.3f}; tasks: {', '.join(sorted(TASKS))})")


def _merge(a) -> None:
    import warnings

    from cos.store import merge

    with warnings.catch_warnings(record=True) as caught:   # one line per skipped entry, not warnings' two
        warnings.simplefilter("always")
        n = merge(a.stores, a.into, trust=a.trust or [])
    for w in caught:
        print(f"warning: {w.message}", file=sys.stderr)
    print(f"merged {n} new results into {a.into}")


def _validate(a) -> None:
    from cos.validation import positive_int

    if a.k is not None:
        from cos.registry import all_claims

        if not any(a.k in c.id for c in all_claims()):
            raise InputError(f"-k {a.k!r}: matches no claim id (cos list shows them); nothing to validate")
    if a.kind == "gate":
        draws = positive_int("--draws", a.draws)
        from cos.gate_validate import PILOT, calibration_files, resummarize_gate, validate_gate

        if draws >= PILOT[0]:   # the pilot draws' numbers: they would be counted as measured draws
            raise InputError(f"--draws {draws}: must be below {PILOT[0]} (draws {PILOT[0]}.. are the gate's pilot draws)")
        seq = a.sequential == "on"
        doc = (resummarize_gate(Path(a.out), draws, seq) if a.summarize_only else
               validate_gate(Path(a.out), draws, a.tier, positive_int("--jobs", a.jobs), a.k, sequential=seq))
        print(calibration_files(Path(a.out), seq)[1].read_text())
        missed = [k for k, c in doc["claims"].items() if not c["meets_goal"]]
        print(f"{len(doc['claims']) - len(missed)}/{len(doc['claims'])} claims meet the gate's goals"
              + (f"; not: {', '.join(missed)}" if missed else ""))
        return
    if a.summarize_only:   # the run's own mode; an explicit --sequential that differs is refused
        from cos.calibration import resummarize

        doc = resummarize(Path(a.out), None if a.sequential is None else a.sequential == "on")
    else:
        draws, jobs = positive_int("--draws", a.draws), positive_int("--jobs", a.jobs)
        from cos.calibration import validate

        doc = validate(Path(a.out), draws, a.tier, jobs, a.k, sequential=a.sequential == "on")
    print((Path(a.out) / "calibration.md").read_text())
    missed = [k for k, c in doc["claims"].items() if not c["meets_goal"]]
    print(f"{len(doc['claims']) - len(missed)}/{len(doc['claims'])} claims meet the goal"
          + (f"; not: {', '.join(missed)}" if missed else ""))


def _new_claim(a) -> None:
    from cos.scaffold import new_claim

    path = new_claim(a.claim_id, a.out)
    print(f"written: {path}\nnext: fill the TODOs, run `pytest tests/test_claims_contract.py -k {a.claim_id}`, "
          f"then `cos baseline add RUN_DIR --into claims-baseline.json -k {a.claim_id}` (docs/adding-a-claim.md)")


def _baseline(a) -> None:
    from cos.scaffold import baseline_rows

    for line in baseline_rows(a.run, a.into, a.k, replace=a.action == "update"):
        print(line)


def forwarded_options() -> str:
    """The pytest plugin's --cos-* options as help text, read from its option group (not a copy)."""
    from cos.pytest_plugin import pytest_addoption

    opts: list[tuple[list[str], dict]] = []

    class Group:
        def addoption(self, *names: str, **kw) -> None:
            opts.append((list(names), kw))

    class Parser:
        def getgroup(self, *_a, **_k) -> Group:
            return Group()

        def addini(self, *_a, **_k) -> None:
            pass

    pytest_addoption(Parser())
    lines = ["options forwarded to pytest (the cos plugin's group; `cos run` passes every unknown option on):"]
    for names, kw in opts:
        flag = ", ".join(names) + (f" {kw['metavar']}" if kw.get("metavar") else
                                   "" if kw.get("action") in ("store_true", "store_false") else
                                   " " + names[0].lstrip("-").removeprefix("cos-").upper().replace("-", "_"))
        choices = f" (one of {', '.join(map(str, kw['choices']))})" if kw.get("choices") else ""
        lines.append(f"  {flag}\n      {kw.get('help', '')}{choices}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from cos import __version__

    argv = sys.argv[1:] if argv is None else list(argv)
    if argv == ["--version"]:   # before the verbs' parsers are built
        print(f"cos {__version__}")
        return 0
    ap = _Parser(prog="cos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version", version=f"cos {__version__}")
    sub = ap.add_subparsers(dest="verb", required=True)
    wants_help = bool(argv) and argv[0] == "run" and ("-h" in argv or "--help" in argv)
    p = sub.add_parser("run", help="run every registered claim on a model and write the table and report",
                       description="Unknown options go to pytest, e.g. --cos-tier gpu --cos-instances 8 -k noise.",
                       epilog=forwarded_options() if wants_help else None,   # imports pytest: only for --help
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "--cos-model", dest="model", default=None, help="a diffusers Wan2.x I2V directory or a cos organism "
                                                 "(default: the organism of a source checkout)")
    p.add_argument("--out", "--cos-out", dest="out", default="cos-out",
                   help="folder for the table, report and store (default: cos-out)")
    p.add_argument("--baseline", "--cos-baseline", dest="baseline", default=None,
                   help="a claims-status.json: fail when a claim that held there does not")
    p.set_defaults(fn=None)
    p = sub.add_parser("gate", help="gate a model change: every claim on NEW and OLD on the same rows, each "
                       "claim's paired change; exit 1 when one regresses", description="Unknown options go to pytest "
                       "(e.g. -k noise, --cos-tier gpu, --cos-tolerance 0.5). OLD is a model directory or a run folder "
                       "with records.jsonl (then the new model runs at that run's settings to pair with it). Against "
                       "a model directory on the gpu and full tiers both models' rows stop at the look that decides "
                       "a claim's change (--cos-sequential off: fixed n; docs/gate.md).")
    p.add_argument("--model", "--cos-model", dest="model", default=None, help="the new model (default: the organism)")
    p.add_argument("--against", "--cos-against", dest="against", required=True,
                   help="the old model directory, or an earlier run folder (its records.jsonl)")
    p.add_argument("--out", "--cos-out", dest="out", default="cos-gate", help="folder for gate.json/.md and both tables")
    p.set_defaults(fn=None)
    p = sub.add_parser("conclude", help="recompute a run's table from its records.jsonl and check it against the "
                       "rows the run wrote (no model is loaded, nothing is sampled)")
    p.add_argument("run", help="a run folder (claims-status.json and records.jsonl)")
    p.add_argument("--format", default="simple", choices=TABLE_FORMATS, help="table format (tabulate's)")
    p.set_defaults(fn=_conclude)
    p = sub.add_parser("list", help="the registered claims with their versions, paper references and controls")
    p.add_argument("--format", default="simple", choices=["markdown", *TABLE_FORMATS],
                   help="markdown: the claims catalogue (docs/claims.md); otherwise a tabulate table format")
    p.set_defaults(fn=_list)
    p = sub.add_parser("new-claim", help="write the skeleton of a new claim module (docs/adding-a-claim.md)")
    p.add_argument("claim_id", metavar="ID", help="the claim id, family.name (lower case), e.g. memory.persistence")
    p.add_argument("--out", default=None, help="the module file (default: cos/claims/<name>.py in a checkout, "
                                               "else ./<name>.py); never overwritten")
    p.set_defaults(fn=_new_claim)
    p = sub.add_parser("baseline", help="copy rows of a run into a baseline file (add new ids, or update them)")
    p.add_argument("action", choices=["add", "update"], help="add: only ids the baseline lacks; update: replace")
    p.add_argument("run", help="a run folder (its claims-status.json) or a claims-status.json")
    p.add_argument("--into", required=True, help="the baseline file (e.g. claims-baseline.json; created by add)")
    p.add_argument("-k", default=None, help="only the rows whose claim id contains this (default: every row)")
    p.set_defaults(fn=_baseline)
    p = sub.add_parser("report", help="re-render the claims report of a run folder (needs the report extra)")
    p.add_argument("run_dir", help="the folder holding claims-status.json (the --cos-out of the run)")
    p.set_defaults(fn=_report)
    p = sub.add_parser("compare", help="two runs side by side: both statuses, paired differences, figures (md + html)")
    p.add_argument("run_a", help="a run folder (holding claims-status.json)")
    p.add_argument("run_b", help="another run folder")
    p.add_argument("--out", required=True, help="folder for compare.md, figures/ and compare.html")
    p.set_defaults(fn=_compare)
    p = sub.add_parser("plan", help="before a run: per claim its max and expected n, row-forwards, GPU-hours, "
                                     "power at its effect size and MDE (cos.plan)")
    p.add_argument("--model", "--cos-model", dest="model", default=None,
                   help="a diffusers Wan2.x I2V directory or a cos organism (default: the shipped organism)")
    p.add_argument("--tier", default="auto", choices=["auto", "cpu", "gpu", "full"], help="the claims' settings")
    p.add_argument("-k", default=None, help="comma-separated fragments of claim ids to plan (default: all)")
    p.add_argument("--gpus", type=int, default=1, help="GPUs the run is spread over (efficiency 1 assumed)")
    p.add_argument("--seconds-per-forward", type=float, default=None,
                   help="seconds per row-forward; default: time a warm forward of the model here")
    p.add_argument("--instances", type=int, default=None, help="task instances per task (overrides the tier)")
    p.add_argument("--pilot", default=None, metavar="STATUS_JSON",
                   help="a claims-status.json of the same claims: its intervals give each claim's spread per unit "
                        "(power and MDE need it; without it they are unknown)")
    p.add_argument("--sequential", default="auto", choices=["auto", "on", "off"],
                   help="plan the expected n of sequential decisions (auto: on for gpu and full)")
    p.add_argument("--looks", default=None, metavar="K",
                   help="with sequential decisions: at most K looks per claim, as the run's --cos-looks (default 3)")
    p.add_argument("--device", default="auto", help="where to time the forward: cpu, cuda, auto")
    p.add_argument("--json", default=None, metavar="FILE", help="write the plan as JSON")
    p.add_argument("--store", "--cos-store", dest="store", default=None, metavar="DIR",
                   help="a result store (a run's --cos-store): per claim the batches it holds and the GPU-hours "
                        "left, as the run's ETA and --cos-budget price them; only looked at, never written")
    p.add_argument("--out", "--cos-out", dest="out", default=None, metavar="DIR",
                   help="the run's --cos-out: its store DIR/cos-store where the run keeps one (the full tier, "
                        "several GPUs; the organism's tiers only with --store)")
    p.add_argument("--store-key", "--cos-store-key", dest="store_key", default=None, metavar="KEYFILE",
                   help="the key that signed the store's entries (default: $COS_STORE_KEY, else the cache dir's)")
    p.set_defaults(fn=_plan)
    p = sub.add_parser("status", help="print a claims-status.json as a table")
    p.add_argument("status", help="a claims-status.json")
    p.add_argument("--compare", default=None, help="another claims-status.json (e.g. the baseline)")
    p.add_argument("--format", default="simple", choices=TABLE_FORMATS, help="tabulate table format")
    p.set_defaults(fn=_status)
    p = sub.add_parser("history", help="the runs of a --cos-out folder: when, model, weights hash, tier, statuses")
    p.add_argument("dir", help="a --cos-out folder (its latest run and those moved to DIR/history/)")
    p.add_argument("--format", default="simple", choices=TABLE_FORMATS, help="tabulate table format")
    p.set_defaults(fn=_history)
    p = sub.add_parser("trace", help="one x̂0 filmstrip (steps × frames) for a task instance")
    p.add_argument("--task", required=True, help="a task of the suite (maze, grounding, pattern, ...)")
    p.add_argument("--instance", type=int, default=0, help="the task instance's seed (default 0)")
    p.add_argument("--seed", type=int, default=0, help="the noise seed")
    p.add_argument("--split", default="id", choices=["id", "ood"], help="in-domain or out-of-domain instance")
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "fixtures" / "organism"),
                   help="a model directory (default: the organism of a source checkout)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    p.add_argument("--every", type=int, default=1, help="draw every k-th step")
    p.add_argument("--out", default=None, help="PNG path (default: trace-<task>-<instance>-s<seed>.png)")
    p.set_defaults(fn=_trace)
    p = sub.add_parser("merge", help="unite the result stores of sharded runs (--cos-shard)")
    p.add_argument("stores", nargs="+", help="result store folders (each a --cos-store or <cos-out>/cos-store)")
    p.add_argument("--into", required=True, help="the store to merge into (created when missing)")
    p.add_argument("--trust", action="append", default=[], metavar="KEYFILE",
                   help="also accept entries signed with this store key (another host's; repeat); they are "
                        "re-signed with yours. Without it only entries signed with your own key are merged")
    p.set_defaults(fn=_merge)
    p = sub.add_parser("validate", help="each claim's power and false-positive rate over independent draws of its "
                                        "planted and null controls (calibration.json, calibration.md)")
    p.add_argument("--out", required=True, help="folder for draws.jsonl, calibration.json and calibration.md")
    p.add_argument("--draws", type=int, default=20, help="independent draws per control (default 20; the goal needs >= 20)")
    p.add_argument("--tier", default="cpu", choices=["cpu", "gpu"], help="cpu (the controls as the tests run them) or gpu (4x the instances)")
    p.add_argument("--jobs", type=int, default=1, help="worker processes (one torch thread each; default 1)")
    p.add_argument("-k", default=None, help="only claims whose id contains this")
    p.add_argument("--kind", default="controls", choices=["controls", "gate"],
                   help="controls: each claim's power and FPR on its controls (default); gate: the gate's power at "
                        "the MDE and FPR on unchanged models, from pairs of controls on the same rows "
                        "(gate-calibration.json/.md; docs/gate.md)")
    p.add_argument("--sequential", default=None, choices=["off", "on"],
                   help="on: every draw decides at looks as --cos-sequential on does (power and FPR count the "
                        "looks; calibration adds the mean share of the batches used; with --kind gate, as a gate "
                        "against a model with --cos-sequential on); off: fixed n (default). "
                        "--summarize-only keeps the mode of the run it resummarizes (a different one is refused); "
                        "with --kind gate it summarizes the draws of the mode asked for (each has its own files)")
    p.add_argument("--summarize-only", action="store_true",
                   help="recompute calibration.json/.md (with --kind gate: gate-calibration.json/.md, for --draws) "
                        "from DIR/draws.jsonl, running nothing (keeps its provenance)")
    p.set_defaults(fn=_validate)
    from cos.vbvr_eval import add_cli as add_vbvr

    add_vbvr(sub)
    for verb, mod in (("train", "cos.train"), ("evaluate", "cos.evaluate")):
        sub.add_parser(verb, help=f"python -m {mod} (see cos {verb} --help)", add_help=False)
    try:
        if argv and argv[0] in ("train", "evaluate"):
            # handed on whole: argparse's REMAINDER refuses a tail that starts with an option (--config ...)
            import importlib

            importlib.import_module(f"cos.{argv[0]}").main(argv[1:], prog=f"cos {argv[0]}")
            return 0
        if argv and argv[0] == "run":
            # unknown options go to pytest (--cos-tier, --cos-instances, -k ...)
            a, rest = ap.parse_known_args(argv)
            return run_claims(a.model, a.out, a.baseline, rest)
        if argv and argv[0] == "gate":
            a, rest = ap.parse_known_args(argv)
            return gate_claims(a.model, a.against, a.out, rest)
        a = ap.parse_args(argv)
        return a.fn(a) or 0
    except (CosError, FileNotFoundError, OSError) as e:
        print(f"cos {argv[0] if argv else ''}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
