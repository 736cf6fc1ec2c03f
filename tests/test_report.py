"""The claims report: every claim gets its section, figures are valid PNGs of sane size, the HTML is
self-contained and renders in headless Chromium (screenshot not blank), and the `cos` command line."""
import json
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
CI_RUN = Path(__file__).resolve().parent.parent / "runs" / "claims"      # README command 1 writes it


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def check_report(run: Path) -> Path:
    md, page = write_report(run)
    text = md.read_text()
    ids = [c["id"] for c in json.loads((run / "claims-status.json").read_text())["claims"]]
    for cid in ids:
        assert f"## {cid}:" in text, f"no section for {cid}"
        assert f"id='{cid}'" in page.read_text()
    pngs = sorted((run / "figures").glob("*.png"))
    assert pngs, "no figures drawn"
    for p in pngs:
        w, h = png_size(p)
        assert 200 <= w <= 4000 and 150 <= h <= 4000, (p, w, h)
        assert f"figures/{p.name}" in text
    assert "src='figures/" not in page.read_text() and "data:image/png;base64," in page.read_text()
    return page


def test_report_of_the_committed_gpu_run_has_every_claim_and_figure(tmp_path):
    run = shutil.copytree(GPU_RUN, tmp_path / "run")
    shutil.rmtree(run / "figures")          # drawn again from the recorded rows
    check_report(run)
    assert len(json.loads((run / "claims-status.json").read_text())["claims"]) == len(all_claims())
    # this run predates the arrays file: it has every figure drawn from details, no filmstrip


def test_filmstrips_come_from_the_arrays_file_the_row_names(tmp_path):
    if not (CI_RUN / "claims-status.json").exists():
        pytest.skip("no CPU-tier run in runs/claims: README command 1 (pytest -m claims --cos-out runs/claims) makes it")
    run = shutil.copytree(CI_RUN, tmp_path / "run")
    shutil.rmtree(run / "figures", ignore_errors=True)
    check_report(run)
    assert sorted(p.name for p in (run / "figures").glob("trace-*.png")), "no x̂0 filmstrip drawn"
    (run / "data" / "cos.superposition.safetensors").unlink()    # the report never looks for other files
    shutil.rmtree(run / "figures")
    check_report(run)
    assert not list((run / "figures").glob("trace-*.png"))


@pytest.mark.skipif(not (CI_RUN / "claims-status.json").exists(),
                    reason="no CPU-tier run in runs/claims: README command 1 (pytest -m claims --cos-out runs/claims) makes it")
def test_report_of_the_cpu_tier_run():
    page = check_report(CI_RUN)
    assert len(json.loads((CI_RUN / "claims-status.json").read_text())["claims"]) == len(all_claims())
    assert page.stat().st_size > 10_000


@pytest.mark.skipif(shutil.which("chromium") is None, reason="headless Chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    run = shutil.copytree(CI_RUN if (CI_RUN / "claims-status.json").exists() else GPU_RUN, tmp_path / "run")
    page = check_report(run)
    shot = tmp_path / "shot.png"
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--screenshot={shot}", "--window-size=1200,2400", page.resolve().as_uri()],
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
