"""Run folders and history (issue 25, item 3; cos.runs): a rerun into a --cos-out moves the previous run's files,
and only cos's, to history/<UTC start>/ at its first write, never clobbering; `cos history` lists the runs;
`--cos-compare last` compares with the previous run on the same weights. Fake status files, and toy claims that
sample nothing (pytester subprocesses) for the plugin end to end."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from cos.cli import main as cos_main
from cos.runs import MARKER, history, keep_previous, mark_run, previous_run, run_entries


def fake_run(out: Path, start: str = "2026-11-26T10:00:00+0100", weights: str = "w1",
             statuses: dict | None = None, model: str = "toy") -> None:
    """A run folder as the plugin and `cos report` leave it (the files' contents do not matter here)."""
    statuses = statuses or {"cos.superposition": "holds", "noise.step_vs_frame": "fails"}
    out.mkdir(parents=True, exist_ok=True)
    rows = [{"id": k, "status": v, "model": model,
             "details": {"weights_hash": weights, "settings": {"tier": "cpu"}, "arrays_file": f"data/{k}.safetensors"}}
            for k, v in statuses.items()]
    (out / "claims-status.json").write_text(json.dumps({"schema": "x", "provenance": {
        "start_time": start, "model": model, "weights_hash": weights, "tier": "cpu"}, "claims": rows}))
    for name in ("claims-status.md", "samples.jsonl", "records.jsonl", "claims-report.md", "claims-report.html"):
        (out / name).write_text(name)
    (out / "data").mkdir(exist_ok=True)
    for k in statuses:
        (out / "data" / f"{k}.safetensors").write_text("arrays")
    (out / "figures").mkdir(exist_ok=True)
    (out / "figures" / MARKER).write_text(json.dumps({"by": "cos report"}))
    (out / "figures" / "forest.png").write_text("png")
    mark_run(out)


def users_files(out: Path) -> None:
    (out / "notes.txt").write_text("mine")
    (out / "data").mkdir(exist_ok=True)
    (out / "data" / "mine.csv").write_text("mine")
    (out / "cos-store").mkdir(exist_ok=True)
    (out / "cos-store" / "entry").write_text("shared")


def test_the_previous_run_moves_to_history_with_only_the_files_cos_wrote(tmp_path):
    out = tmp_path / "o"
    fake_run(out)
    users_files(out)
    dest = keep_previous(out)
    assert dest == out / "history" / "2026-11-26T090000Z"      # the run's start, in UTC
    moved = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert moved == sorted([MARKER, "claims-report.html", "claims-report.md", "claims-status.json", "claims-status.md",
                            "data/cos.superposition.safetensors", "data/noise.step_vs_frame.safetensors",
                            "figures/.cos-made", "figures/forest.png", "records.jsonl", "samples.jsonl"])
    left = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and "history" not in p.parts)
    assert left == ["cos-store/entry", "data/mine.csv", "notes.txt"]     # the user's files and the shared store
    assert run_entries(out) == [] and keep_previous(out) is None           # nothing left to move


def test_a_history_folder_is_never_clobbered(tmp_path):
    out = tmp_path / "o"
    fake_run(out, statuses={"cos.superposition": "holds"})
    first = keep_previous(out)
    fake_run(out, statuses={"cos.superposition": "fails"})           # the same start second
    second = keep_previous(out)
    assert first.name == "2026-11-26T090000Z" and second.name == "2026-11-26T090000Z-2"
    assert json.loads((first / "claims-status.json").read_text())["claims"][0]["status"] == "holds"
    assert json.loads((second / "claims-status.json").read_text())["claims"][0]["status"] == "fails"


def test_only_paths_cos_writes_are_moved_whatever_a_marker_lists(tmp_path):
    out = tmp_path / "o"
    fake_run(out)
    users_files(out)
    # a hand-edited marker naming the user's files, the store and a path outside the folder moves none of them
    (out / MARKER).write_text(json.dumps({"by": "cos run", "files": ["notes.txt", "cos-store", "../x", "data/mine.csv",
                                                                    "claims-status.json"]}))
    (out / "figures" / MARKER).unlink()                              # a figures/ folder cos did not make stays
    dest = keep_previous(out)
    assert (out / "notes.txt").exists() and (out / "cos-store" / "entry").exists() and (out / "data" / "mine.csv").exists()
    assert (out / "figures" / "forest.png").exists() and not (dest / "figures").exists()
    assert (dest / "claims-status.json").exists()


def test_overwrite_replaces_without_history_and_keeps_the_users_files(tmp_path):
    out = tmp_path / "o"
    fake_run(out)
    users_files(out)
    assert keep_previous(out, keep=False) is None
    assert not (out / "history").exists() and not (out / "claims-status.json").exists()
    assert not (out / "data" / "cos.superposition.safetensors").exists() and not (out / "figures").exists()
    assert (out / "notes.txt").exists() and (out / "data" / "mine.csv").exists() and (out / "cos-store").exists()


def test_a_folder_without_a_run_is_left_alone(tmp_path):
    users_files(tmp_path)
    (tmp_path / "samples.jsonl").write_text("the user's own")     # a cos file name, but no run table beside it
    assert keep_previous(tmp_path) is None and (tmp_path / "samples.jsonl").read_text() == "the user's own"


def test_history_lists_runs_and_the_previous_run_is_the_latest_on_the_same_weights(tmp_path, capsys):
    out = tmp_path / "o"
    fake_run(out, "2026-11-26T10:00:00+0000", "w1", {"cos.superposition": "holds"})
    keep_previous(out)
    fake_run(out, "2026-11-27T10:00:00+0000", "w2", {"cos.superposition": "fails"}, model="other")
    keep_previous(out)
    fake_run(out, "2026-11-28T10:00:00+0000", "w1", {"cos.superposition": "inconclusive", "noise.step_vs_frame": "holds"})
    runs = history(out)
    assert [(r["run"], r["weights_hash"], r["statuses"]) for r in runs] == [
        ("2026-11-26T100000Z", "w1", {"holds": 1}), ("2026-11-27T100000Z", "w2", {"fails": 1}),
        ("latest", "w1", {"inconclusive": 1, "holds": 1})]
    assert previous_run(out, "w1") == out / "history" / "2026-11-26T100000Z"
    assert previous_run(out, "w3") is None and previous_run(out, None) is None
    assert cos_main(["history", str(out)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == ["run", "started", "model", "weights", "tier", "statuses"]
    assert text[2].split()[:5] == ["2026-11-26T100000Z", "2026-11-26T10:00:00+0000", "toy", "w1", "cpu"]
    assert text[-1].split() == ["latest", "2026-11-28T10:00:00+0000", "toy", "w1", "cpu", "1", "holds,", "1",
                                "inconclusive"]


def test_history_of_a_folder_without_runs_is_one_line(tmp_path, capsys):
    assert cos_main(["history", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path) in err[0] and "holds no run" in err[0]
    assert cos_main(["history", str(tmp_path / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


TOY = '''
import os, pytest
from cos.registry import ClaimResult, decide

def make(cid, lo, hi):
    return ClaimResult.for_claim(cid, measured=(lo + hi) / 2, ci_low=lo, ci_high=hi, n=10, status=decide(lo, hi),
                                 model="toy", seeds=[0], details={"weights_hash": "toyhash"})

@pytest.mark.claims
@pytest.mark.claim("cos.superposition")
def test_a(cos_claim):
    if os.environ.get("TOY_BREAK"):
        raise RuntimeError("broken")
    lo = float(os.environ.get("TOY_LO", "0.1"))
    cos_claim.report(make("cos.superposition", lo, lo + 0.2))
'''


def test_reruns_keep_history_and_compare_with_the_last_run(pytester, monkeypatch):
    out = pytester.path / "out"
    pytester.makepyfile(test_toy=TOY)
    args = ("-m", "claims", "-p", "no:cacheprovider", "-p", "no:xdist", "--cos-out", str(out))
    junit = pytester.path / "junit.xml"
    assert pytester.runpytest_subprocess(*args, f"--junitxml={junit}").ret == 0
    first = json.loads((out / "claims-status.json").read_text())
    # junit.xml: the row as one short property per claim test, not the records/samples that travel between processes
    import xml.etree.ElementTree as ET

    props = {p.get("name"): p.get("value") for p in ET.parse(junit).iter("property")}
    assert props["cos_row"].startswith("holds: ") and "n=" in props["cos_row"], props
    assert not {"cos_records", "cos_samples", "cos_claim_result"} & set(props) and junit.stat().st_size < 20_000
    # a rerun needs no --cos-overwrite: the first run moves to history when this one first writes
    monkeypatch.setenv("TOY_LO", "-0.1")
    res = pytester.runpytest_subprocess(*args, "--cos-compare", "last")
    assert res.ret == 0, res.stdout.str()
    (hist,) = (out / "history").iterdir()
    assert json.loads((hist / "claims-status.json").read_text()) == first
    assert json.loads((out / "claims-status.json").read_text())["claims"][0]["status"] == "inconclusive"
    text = res.stdout.str()
    assert f"moved to {hist}" in text
    assert f"against the previous run on the same weights ({hist}): regressed cos.superposition" in text
    assert "cos.superposition: holds → inconclusive" in text
    assert json.loads((out / MARKER).read_text())["files"][:2] == ["claims-status.json", "claims-status.md"]
    # a run in which every claim errors displaces nothing
    monkeypatch.setenv("TOY_BREAK", "1")
    res = pytester.runpytest_subprocess(*args)
    assert "every claim errored" in res.stdout.str()
    assert len(list((out / "history").iterdir())) == 1
    assert json.loads((out / "claims-status.json").read_text())["claims"][0]["status"] == "inconclusive"
    # --cos-overwrite: replaced, not kept
    monkeypatch.delenv("TOY_BREAK")
    monkeypatch.setenv("TOY_LO", "0.1")
    assert pytester.runpytest_subprocess(*args, "--cos-overwrite").ret == 0
    assert len(list((out / "history").iterdir())) == 1
    assert json.loads((out / "claims-status.json").read_text())["claims"][0]["status"] == "holds"


@pytest.mark.parametrize("bad", ["previous", "2"])
def test_cos_compare_takes_only_last(pytester, bad):
    pytester.makepyfile(test_toy=TOY)
    res = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-p", "no:xdist", "--cos-compare", bad)
    assert res.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--cos-compare: invalid choice: '{bad}'" in res.stderr.str()
