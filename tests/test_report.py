"""The claims report: every claim gets its section, figures are valid PNGs of sane size, the HTML is
self-contained and renders in headless Chromium (screenshot not blank), and the `cos` command line."""
import json
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from cos.cli import main as cos_main
from cos.registry import all_claims

pytest.importorskip("matplotlib", reason="figures need the report extra (matplotlib)")
from cos.report import write_report  # noqa: E402

GPU_RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "results" / "gpu" / "organism-gpu"
GPU_V2 = GPU_RUN.parent / "organism-gpu-v2"
CI_RUN = Path(__file__).resolve().parent.parent / "runs" / "claims"      # README command 1 writes it


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_report(run: Path) -> Path:
    md, page = write_report(run)
    text = md.read_text()
    rows = json.loads((run / "claims-status.json").read_text())["claims"]
    for row in rows:
        cid = row["id"]
        assert f"## {cid}:" in text, f"no section for {cid}"
        assert f"id='{cid}'" in page.read_text()
        section = text.split(f"## {cid}:")[1].split("\n## ")[0]
        assert "**Rule:** holds when the whole 95% CI" in section, f"{cid}: no decision rule"
        for name, status in (row["details"].get("conditions") or {}).items():
            assert f"`{name}` {status}" in section
        if row["status"] not in ("skipped", "error"):
            # one sentence under every figure saying what would make the claim (or its condition) hold
            for line in section.splitlines():
                if line.startswith("!["):
                    cap = section.split(line)[1].strip().splitlines()[0]
                    assert cap.startswith("*") and ("hold" in cap.lower() or "decided" in cap.lower()), (cid, cap)
    assert "| claim | status | measured [95% CI] | decision rule |" in text
    # the forest plot's status words are the rows' (read, never re-decided): its SVG holds them as text
    svg = (run / "figures" / "forest.svg").read_text()
    for row in rows:
        assert f"{row['id']}  {row['status']}" in svg, f"{row['id']}: forest says otherwise than its row"
    assert (run / "figures" / ".cos-made").exists()
    pngs = sorted((run / "figures").glob("*.png"))
    assert pngs, "no figures drawn"
    for p in pngs:
        w, h = png_size(p)
        # ≤ 1000 px wide: shown unscaled in the 1100 px column, so 9 pt text stays 9 pt
        assert 200 <= w <= 1000 and 150 <= h <= 4000, (p, w, h)
        assert f"figures/{p.name}" in text
        assert p.with_suffix(".svg").exists(), f"no SVG beside {p.name}"
    assert "src='figures/" not in page.read_text() and "data:image/png;base64," in page.read_text()
    return page


def test_report_of_the_committed_gpu_run_has_every_claim_and_figure(tmp_path):
    run = shutil.copytree(GPU_RUN, tmp_path / "run")
    shutil.rmtree(run / "figures")          # drawn again from the recorded rows
    check_report(run)
    assert len(json.loads((run / "claims-status.json").read_text())["claims"]) == len(all_claims())
    # this run predates the arrays file: it has every figure drawn from details, no filmstrip


def test_report_clears_only_a_figures_folder_cos_made(tmp_path, capsys):
    run = shutil.copytree(GPU_V2, tmp_path / "run")
    shutil.rmtree(run / "figures", ignore_errors=True)
    (run / "figures").mkdir()
    (run / "figures" / "fig1-final.pdf").write_bytes(b"a user's")       # a folder cos did not make: refused
    assert cos_main(["report", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not made by cos" in err[0] and (run / "figures" / "fig1-final.pdf").exists()
    (run / "figures" / "fig1-final.pdf").unlink()
    check_report(run)                                                   # an empty folder is adopted
    (run / "figures" / "stale-from-another-run.png").write_bytes(b"x")
    check_report(run)                                                   # cos's own: cleared
    assert not (run / "figures" / "stale-from-another-run.png").exists()
    text = (run / "claims-report.md").read_text()
    # the paper's VBVR-Bench numbers are another benchmark's: in the caption, no twin panel of bars
    assert "figures/bench-above-random.png" in text and "figures/bench.png" not in text
    assert "another benchmark, not comparable" in text
    # `cos compare --out RUN` never clears the run's own figures (another verb's folder)
    assert cos_main(["compare", str(run), str(run), "--out", str(run)]) == 2
    assert "made by `cos report`" in capsys.readouterr().err and (run / "figures" / "forest.png").exists()


def test_distill_draws_its_scores_and_first_step_entropy(tmp_path):
    from cos.registry import get_claim

    c = get_claim("distill.four_step")
    est = lambda v: {"value": v, "ci_low": v - 0.05, "ci_high": v + 0.05, "n": 8}
    d = c.Details(fast_model="fast", score_full=est(0.6), score_fast=est(0.5), first_step_entropy=0.3,
                  first_step_entropy_ci=[0.2, 0.4])
    figs = c.figures(d, tmp_path, {})
    assert [p.name for p, _ in figs] == ["distill.png", "distill-entropy.png"]
    assert all(p.with_suffix(".svg").exists() and "hold" in cap.lower() for p, cap in figs)


def test_a_bar_without_interval_is_drawn_without_error_bar_and_says_so(tmp_path):
    from cos.figures import bars

    p = bars(["a", "b"], [0.3, 0.5], [(0.2, 0.4), None], tmp_path / "b.png", ylabel="score", title="t")
    svg = p.with_suffix(".svg").read_text()
    assert "Hatched: no interval" in svg and "(b)." in svg
    # no interval anywhere: no "95% CI" in the legend (and no zero-length caps drawn as if certain)
    svg = bars(["a", "b"], [0.3, 0.5], [None, None], tmp_path / "c.png", ylabel="n").with_suffix(".svg").read_text()
    assert "95% CI" not in svg and "measured (no interval)" in svg


def test_compare_two_runs_side_by_side_with_paired_differences(tmp_path, capsys):
    a = shutil.copytree(GPU_V2, tmp_path / "a")
    b = shutil.copytree(GPU_V2, tmp_path / "b")
    doc = json.loads((b / "claims-status.json").read_text())
    for row in doc["claims"]:   # per-instance values: B is A + 0.01 on shared instances
        if row["id"] == "memory.persistence":
            row["details"]["per_instance"] = {f"i{k}": 0.5 + 0.01 * k + 0.01 for k in range(6)}
            row["status"] = "fails"
    (b / "claims-status.json").write_text(json.dumps(doc))
    da = json.loads((a / "claims-status.json").read_text())
    for row in da["claims"]:
        if row["id"] == "memory.persistence":
            row["details"]["per_instance"] = {f"i{k}": 0.5 + 0.01 * k for k in range(8)}
    (a / "claims-status.json").write_text(json.dumps(da))
    assert cos_main(["compare", str(a), str(b), "--out", str(tmp_path / "cmp")]) == 0
    md = (tmp_path / "cmp" / "compare.md").read_text()
    page = (tmp_path / "cmp" / "compare.html").read_text()
    for row in da["claims"]:
        assert f"## {row['id']}:" in md and f"id='{row['id']}'" in page
    line = next(x for x in md.splitlines() if x.startswith("| [memory.persistence]"))
    assert "| holds | fails |" in line and "+0.01 [+0.01, +0.01] paired, 6 shared instances" in line
    assert (tmp_path / "cmp" / "figures" / ".cos-made").exists()
    assert "unpaired (no shared per-instance values)" in md    # the copies hold no records.jsonl
    assert "figures/compare-cos-superposition.png" in md and "figures/a/" in md and "figures/b/" in md
    assert "src='figures/" not in page and "data:image/png;base64," in page
    assert cos_main(["compare", str(a), str(tmp_path / "nope"), "--out", str(tmp_path / "c2")]) == 2


def test_compare_pairs_two_runs_through_their_records(tmp_path):
    """Runs written as records (every claim today; `details.per_instance` is only a scaffold's) are paired by the
    gate's paired change: memory's oracle (A) against its lapse null (B) on the same 6 rows is -1 on every instance,
    decided by the sign-test interval; rows of other seeds are said to be unpaired, with the reason."""
    from dataclasses import replace

    from cos.records import write_records
    from cos.registry import get_claim

    claim = get_claim("memory.persistence")
    ctl = {c.name: c for c in claim.controls()}
    rows = {n: ctl[n].run(claim) for n in ("oracle", "lapse-mid-way")}
    other = replace(ctl["lapse-mid-way"], settings=replace(ctl["lapse-mid-way"].settings, seeds=(77,))).run(claim)
    runs = {}
    for name, res in (("a", rows["oracle"]), ("b", rows["lapse-mid-way"]), ("c", other)):
        run = shutil.copytree(GPU_V2, tmp_path / name)
        doc = json.loads((run / "claims-status.json").read_text())
        for row in doc["claims"]:
            if row["id"] == claim.id:
                row.update(status=res.status, measured=res.measured, ci_low=res.ci_low, ci_high=res.ci_high)
        (run / "claims-status.json").write_text(json.dumps(doc))
        assert write_records(run, [res]) is not None
        runs[name] = run
    line = lambda md: next(x for x in md.splitlines() if x.startswith("| [memory.persistence]"))
    assert cos_main(["compare", str(runs["a"]), str(runs["b"]), "--out", str(tmp_path / "ab")]) == 0
    ab = line((tmp_path / "ab" / "compare.md").read_text())
    assert "-1 [-1, -1] paired over 6 shared instances" in ab, ab
    assert cos_main(["compare", str(runs["a"]), str(runs["c"]), "--out", str(tmp_path / "ac")]) == 0
    ac = line((tmp_path / "ac" / "compare.md").read_text())
    assert "unpaired (records not paired: ValueError: 0 task instance(s) with the same seeds" in ac, ac
    # records of another claim version than the installed one are not recomputed by this cos's conclusion
    from cos.report import paired_difference
    from cos.records import load_records

    ra, rb = (load_records(runs[k])[claim.id] for k in ("a", "b"))
    old = replace(ra, version=claim.spec.version - 1)
    row = {"id": claim.id, "measured": 1.0}
    assert "recorded, v" in paired_difference(row, row, old, replace(rb, version=claim.spec.version - 1))[0]
    assert "no records of this claim in run A" in paired_difference(row, row, None, rb)[0]


def test_a_folder_with_an_earlier_run_is_not_refused_and_a_run_that_writes_nothing_leaves_it(pytester, tmp_path):
    # a rerun moves the earlier run to history when it first writes (tests/test_runs.py); one that selects no
    # claim writes nothing, so the earlier table stays where it was
    out = tmp_path / "o"
    out.mkdir()
    (out / "claims-status.json").write_text('{"claims": []}')
    pytester.makepyfile(test_x="def test_x():\n    pass\n")
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-out", str(out))
    assert res.ret == pytest.ExitCode.NO_TESTS_COLLECTED
    assert (out / "claims-status.json").read_text() == '{"claims": []}' and not (out / "history").exists()


def test_a_run_where_every_claim_errors_keeps_the_earlier_table(pytester, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "claims-status.json").write_text('{"claims": [], "earlier": true}')
    pytester.makepyfile(test_toy="""
import pytest

@pytest.mark.claims
@pytest.mark.claim("memory.persistence")
def test_error(cos_claim):
    raise RuntimeError("broken")
""")
    res = pytester.runpytest_subprocess("-m", "claims", "-p", "no:cacheprovider", "--cos-out", str(out),
                                        "--cos-overwrite")
    assert "every claim errored" in res.stdout.str()
    assert json.loads((out / "claims-status.json").read_text())["earlier"] is True


def test_filmstrips_come_from_the_arrays_file_the_row_names(tmp_path):
    if not (CI_RUN / "claims-status.json").exists():
        pytest.skip("no CPU-tier run in runs/claims: README command 1 (pytest -m claims --cos-out runs/claims) makes it")
    run = shutil.copytree(CI_RUN, tmp_path / "run")
    shutil.rmtree(run / "figures", ignore_errors=True)
    check_report(run)
    strips = sorted(p.name for p in (run / "figures").glob("trace-*.png"))
    assert strips, "no x̂0 filmstrip drawn"
    doc = json.loads((run / "claims-status.json").read_text())
    sup = next(c for c in doc["claims"] if c["id"] == "cos.superposition")
    tasks = sup["details"]["settings"]["tasks"]
    traced = {t["task"] for t in sup["details"]["traces"]}
    assert traced == set(tasks), f"filmstrips for {sorted(traced)}, run had {sorted(tasks)}"
    assert {t["which"] for t in sup["details"]["traces"]} == {"most confident", "least confident"}
    assert (run / "data" / "cos.superposition.safetensors").stat().st_size < 4_000_000
    (run / "data" / "cos.superposition.safetensors").unlink()    # the report never looks for other files
    shutil.rmtree(run / "figures")
    check_report(run)
    assert not list((run / "figures").glob("trace-*.png"))


@pytest.mark.skipif(not (CI_RUN / "claims-status.json").exists(),
                    reason="no CPU-tier run in runs/claims: README command 1 (pytest -m claims --cos-out runs/claims) makes it")
def test_report_of_the_cpu_tier_run(tmp_path):
    run = shutil.copytree(CI_RUN, tmp_path / "run")
    shutil.rmtree(run / "figures", ignore_errors=True)      # drawn again (an older cos's folder has no marker)
    page = check_report(run)
    assert len(json.loads((run / "claims-status.json").read_text())["claims"]) == len(all_claims())
    assert page.stat().st_size > 10_000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    run = shutil.copytree(CI_RUN if (CI_RUN / "claims-status.json").exists() else GPU_V2, tmp_path / "run")
    shutil.rmtree(run / "figures", ignore_errors=True)
    page = check_report(run)
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    # the whole page as Chromium parsed it: every claim's section, its rule and its figures
    dom = subprocess.run([*chrome, "--dump-dom", page.resolve().as_uri()], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    for row in json.loads((run / "claims-status.json").read_text())["claims"]:
        sec = dom.split(f'id="{row["id"]}"')
        assert len(sec) == 2, f"{row['id']}: no section in the rendered page"
        body = sec[1].split("<section")[0]
        assert "Rule:" in body
        # every figure of the section carries its row's status word, as the table's row says it
        table_row = dom.split(f'data-claim="{row["id"]}"')[1].split("</tr>")[0]
        assert f"<b>{row['status']}</b>" in table_row
        assert set(re.findall(r'<figure data-status="(\w+)"', body)) <= {row["status"]}
    shot = tmp_path / "shot.png"
    subprocess.run([*chrome, f"--screenshot={shot}", "--window-size=1200,2400", page.resolve().as_uri()],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image

    img = Image.open(shot).convert("L")
    lo, hi = img.getextrema()
    colours = len(img.getcolors(maxcolors=1 << 16) or [])
    assert hi - lo > 100 and colours > 20, f"screenshot looks blank ({lo}-{hi}, {colours} grey levels)"


def test_cli_status_compare_and_one_line_errors(tmp_path, capsys):
    assert cos_main(["status", str(GPU_RUN / "claims-status.json"), "--compare", str(GPU_RUN / "claims-status.json")]) == 0
    out = capsys.readouterr().out
    assert "regressed none" in out and "cos.superposition" in out
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert cos_main(["status", str(bad)]) == 2
    assert cos_main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "malformed JSON" in err[0] and "no claims-status.json" in err[1]


def test_cli_trace_and_merge(tmp_path, capsys):
    assert cos_main(["trace", "--task", "pattern", "--every", "4", "--out", str(tmp_path / "t.png")]) == 0
    assert png_size(tmp_path / "t.png")[0] > 200
    from cos.store import ResultStore

    ResultStore(tmp_path / "a").put("abcd", {"n": 1})
    (tmp_path / "a" / "ab" / "abce.pt").write_bytes(b"x")       # old pickle format: skipped, never loaded
    capsys.readouterr()
    assert cos_main(["merge", str(tmp_path / "a"), "--into", str(tmp_path / "m")]) == 0
    assert ResultStore(tmp_path / "m").get("abcd") == {"n": 1} and not (tmp_path / "m" / "ab" / "abce.pt").exists()
    assert "1 old-format (.pt, pickle) entries skipped" in capsys.readouterr().err
    assert cos_main(["merge", str(tmp_path / "nope"), "--into", str(tmp_path / "m")]) == 2


HOSTILE_ID = "<script>document.body.setAttribute('data-pwned','1')</script>"
HOSTILE_DIR = "<img src=x onerror=\"document.body.setAttribute('data-pwned','1')\">"


def hostile_run(path: Path) -> Path:
    """A run folder (named with an <img onerror>) whose status file has a <script> claim id and title."""
    run = shutil.copytree(GPU_V2, path)
    shutil.rmtree(run / "figures", ignore_errors=True)
    doc = json.loads((run / "claims-status.json").read_text())
    doc["claims"][0]["id"] = HOSTILE_ID
    doc["claims"][0]["title"] = HOSTILE_ID
    doc["claims"][1]["reason"] = HOSTILE_ID
    (run / "claims-status.json").write_text(json.dumps(doc))
    return run


def test_strings_from_a_status_file_are_escaped_in_report_and_comparison(tmp_path):
    run = hostile_run(tmp_path / HOSTILE_DIR)
    _, page = write_report(run)
    assert cos_main(["compare", str(run), str(GPU_V2), "--out", str(tmp_path / "cmp")]) == 0
    for html in (page.read_text(), (tmp_path / "cmp" / "compare.html").read_text()):
        assert "<script" not in html and "<img src=x" not in html
        assert "&lt;script&gt;" in html or "&lt;img" in html
    assert "&lt;img src=x" in (tmp_path / "cmp" / "compare.html").read_text()
    assert "<script" not in (run / "claims-report.md").read_text()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_a_script_claim_id_or_folder_name_does_not_run_in_chromium(tmp_path):
    run = hostile_run(tmp_path / HOSTILE_DIR)
    _, page = write_report(run)
    assert cos_main(["compare", str(run), str(GPU_V2), "--out", str(tmp_path / "cmp")]) == 0
    chrome = ["chromium", "--headless", "--no-sandbox", "--disable-gpu"]
    for p in (page, tmp_path / "cmp" / "compare.html"):
        dom = subprocess.run([*chrome, "--dump-dom", p.resolve().as_uri()], check=True, capture_output=True,
                             text=True, timeout=120).stdout
        assert "<body" in dom and 'data-pwned="1"' not in dom, f"{p.name}: a script from the data ran"


def test_a_filmstrip_is_one_image_with_every_frame_in_its_cell(tmp_path, monkeypatch):
    import matplotlib
    import numpy as np

    from cos import figures
    from cos.figures import GAP, filmstrip, mosaic
    rng = np.random.default_rng(0)
    frames = rng.random((4, 5, 6, 7, 3)).astype(np.float32)
    grid, gap = mosaic(frames)
    assert grid.shape == (4 * 6 + 3 * gap, 5 * 7 + 4 * gap, 3)
    ink = np.ones(grid.shape[:2], bool)
    for i in range(4):
        for j in range(5):
            y, x = i * (6 + gap), j * (7 + gap)
            assert np.array_equal(grid[y:y + 6, x:x + 7], frames[i, j])
            ink[y:y + 6, x:x + 7] = False
    assert np.all(grid[ink] == GAP)              # the gaps are grey, nothing else is left out
    assert mosaic(frames * 3 - 1)[0].min() >= 0 and mosaic(frames * 3 - 1)[0].max() <= 1     # clipped to [0, 1]

    drawn = {}
    monkeypatch.setattr(figures, "_save", lambda fig, path: drawn.setdefault("fig", fig) and path)
    labels = ["first row", "x" * 80, "2", "3"]
    filmstrip(frames, tmp_path / "strip.png", row_labels=labels, title="the title")
    fig = drawn["fig"]
    ax, = fig.axes
    r = fig.canvas.get_renderer()
    assert [t.get_text() for t in ax.get_xticklabels()] == [f"f{j}" for j in range(5)]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["first row", "x" * 59 + "…", "2", "3"]
    assert fig._suptitle.get_text() == "the title"
    box = ax.get_window_extent(r)                 # square pixels: the axes has the image's aspect
    assert box.width / box.height == pytest.approx(grid.shape[1] / grid.shape[0], rel=1e-3)
    whole = fig.bbox
    for t in [*ax.get_yticklabels(), *ax.get_xticklabels(), fig._suptitle]:   # nothing drawn outside the figure
        e = t.get_window_extent(r)
        assert e.x0 >= whole.x0 - 1 and e.x1 <= whole.x1 + 1 and e.y0 >= whole.y0 - 1 and e.y1 <= whole.y1 + 1
    matplotlib.pyplot.close(fig)
    monkeypatch.undo()
    p = filmstrip(frames, tmp_path / "strip.png", row_labels=[f"row {i}" for i in range(4)], title="t")
    assert p.exists() and p.with_suffix(".svg").exists()
