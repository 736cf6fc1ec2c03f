"""`cos`: the command line for what is not a test.

    cos run --model DIR --out DIR [...]     run every registered claim on a model (pytest underneath)
    cos list                                the registered claims: id, version, paper reference, decision rule
    cos report RUN_DIR                      re-render the report beside RUN_DIR/claims-status.json
    cos status STATUS.json [--compare B]    print the table; with --compare, what changed against B
    cos trace --task maze --seed 3          one x̂0 filmstrip of a task on a model (PNG)
    cos merge STORE... --into DEST          unite result stores of sharded runs
    cos train / cos evaluate ...            the organism's training and held-out evaluation
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cos.errors import CosError


def _list(a) -> None:
    from tabulate import tabulate

    from cos.registry import all_claims

    rows = [(c.id, c.spec.version, c.spec.paper_ref, f"{c.spec.direction} {c.spec.threshold:g}",
             ", ".join(f"{k.kind} {k.name}" for k in c.controls()), c.spec.title) for c in all_claims()]
    print(tabulate(rows, headers=["claim", "version", "paper", "holds when CI", "controls", "title"], tablefmt=a.format))


def run_claims(model: str | None, out: str, baseline: str | None = None, extra: list[str] | None = None) -> int:
    """Run every registered claim through pytest (the installed entry point `cos/testing.py`), outside any
    project's own pytest configuration; returns pytest's exit code."""
    import os

    import pytest

    import cos.testing

    Path(out).mkdir(parents=True, exist_ok=True)
    args = [cos.testing.__file__, "-m", "claims", "-c", os.devnull, "--rootdir", out, "-p", "no:cacheprovider",
            "--cos-out", out, *(["--cos-model", model] if model else []),
            *(["--cos-baseline", baseline] if baseline else []), *(extra or [])]
    return int(pytest.main(args))


def _report(a) -> None:
    from cos.report import write_report

    if not (Path(a.run_dir) / "claims-status.json").exists():
        raise CosError(f"{a.run_dir}: no claims-status.json in this folder")
    for p in write_report(a.run_dir):
        print(f"written: {p}")


def _status(a) -> None:
    from cos.registry import ClaimResult
    from cos.reporting import compare, load_status, render_table

    doc = load_status(a.status)
    rows = [ClaimResult.from_dict(c) for c in doc["claims"]]
    labels = None
    if a.compare:
        c = compare(load_status(a.compare), rows)
        labels = c["labels"]
        print(f"against {a.compare}: regressed {c['regressed'] or 'none'}; newly hold {c['newly_holds'] or 'none'}"
              + (f"; missing now {c['missing']}" if c["missing"] else ""))
    print(render_table(rows, a.format, labels))


def _trace(a) -> None:
    from cos.models import load_system
    from cos.tasks import TASKS, make_instance
    from cos.trace import trace

    make_instance(a.task, 0)   # registers the tasks; an unknown task is a one-line InputError
    system = load_system(a.model, device=a.device)
    t = trace(system, a.task, instance=a.instance, seed=a.seed, split=a.split)
    out = a.out or f"trace-{a.task}-{a.instance}-s{a.seed}.png"
    print(f"written: {t.draw(out, every=a.every)} (final score {t.final_score:.3f}; tasks: {', '.join(sorted(TASKS))})")


def _merge(a) -> None:
    from cos.store import merge

    n = merge(a.stores, a.into)
    print(f"merged {n} new results into {a.into}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="cos", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="verb", required=True)
    p = sub.add_parser("run", help="run every registered claim on a model and write the table and report",
                       description="Unknown options go to pytest, e.g. --cos-tier gpu --cos-instances 8 -k noise.")
    p.add_argument("--model", default=None, help="a diffusers Wan2.x I2V directory or a cos organism "
                                                 "(default: the organism of a source checkout)")
    p.add_argument("--out", default="cos-out", help="folder for the table, report and store (default: cos-out)")
    p.add_argument("--baseline", default=None, help="a claims-status.json: fail when a claim that held there does not")
    p.set_defaults(fn=None)
    p = sub.add_parser("list", help="the registered claims with their versions, paper references and controls")
    p.add_argument("--format", default="simple", help="tabulate format (simple, github, ...)")
    p.set_defaults(fn=_list)
    p = sub.add_parser("report", help="re-render the claims report of a run folder (needs the report extra)")
    p.add_argument("run_dir", help="the folder holding claims-status.json (the --cos-out of the run)")
    p.set_defaults(fn=_report)
    p = sub.add_parser("status", help="print a claims-status.json as a table")
    p.add_argument("status", help="a claims-status.json")
    p.add_argument("--compare", default=None, help="another claims-status.json (e.g. the baseline)")
    p.add_argument("--format", default="simple", help="tabulate format (simple, github, ...)")
    p.set_defaults(fn=_status)
    p = sub.add_parser("trace", help="one x̂0 filmstrip (steps × frames) for a task instance")
    p.add_argument("--task", required=True)
    p.add_argument("--instance", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="the noise seed")
    p.add_argument("--split", default="id", choices=["id", "ood"])
    p.add_argument("--model", default=str(Path(__file__).resolve().parent.parent / "fixtures" / "organism"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--every", type=int, default=1, help="draw every k-th step")
    p.add_argument("--out", default=None, help="PNG path (default: trace-<task>-<instance>-s<seed>.png)")
    p.set_defaults(fn=_trace)
    p = sub.add_parser("merge", help="unite the result stores of sharded runs (--cos-shard)")
    p.add_argument("stores", nargs="+")
    p.add_argument("--into", required=True)
    p.set_defaults(fn=_merge)
    for verb, mod in (("train", "cos.train"), ("evaluate", "cos.evaluate")):
        p = sub.add_parser(verb, help=f"python -m {mod} (see cos {verb} --help)", add_help=False)
        p.add_argument("args", nargs=argparse.REMAINDER)
        p.set_defaults(fn=None, module=mod)
    a, rest = ap.parse_known_args(argv)
    if a.verb == "run":
        return run_claims(a.model, a.out, a.baseline, rest)
    if rest and a.verb not in ("train", "evaluate"):
        ap.error(f"unrecognized arguments: {' '.join(rest)}")
    if a.fn is None:
        import importlib

        sys.argv = [f"cos {a.verb}", *a.args]
        importlib.import_module(a.module).main()
        return 0
    try:
        a.fn(a)
    except (CosError, FileNotFoundError, OSError) as e:
        print(f"cos {a.verb}: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
