"""The front door (issue 27): the declared API, `python -m cos --version`, help on every CLI argument, `cos run
--help` listing the plugin's forwarded options, docs/claims.md generated and current, and a claim written from
`cos new-claim`'s skeleton with its baseline row from `cos baseline add` keeping the claim contract."""
from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cos
from cos.cli import _Parser, main as cos_main

ROOT = Path(__file__).resolve().parent.parent


def test_every_declared_api_name_exists():
    assert cos.__version__ and "__version__" in cos.__all__
    missing = [n for n in cos.__all__ if not hasattr(cos, n)]
    assert not missing, f"cos.__all__ names what cos does not have: {missing}"
    with pytest.raises(AttributeError):
        cos.not_an_api_name


def test_python_m_cos_version_without_torch():
    out = subprocess.run([sys.executable, "-c", "import sys, runpy; sys.argv = ['cos', '--version']\n"
                          "try:\n    runpy.run_module('cos', run_name='__main__')\nexcept SystemExit as e:\n"
                          "    assert e.code == 0, e.code\nassert 'torch' not in sys.modules, 'torch imported'"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"cos {cos.__version__}"


def parsers(monkeypatch) -> dict[str, argparse.ArgumentParser]:
    """Every (sub)parser of `cos`, by verb, as main builds them."""
    seen = {}

    def grab(self, *a, **k):
        seen[""] = self
        raise SystemExit(0)
    monkeypatch.setattr(_Parser, "parse_args", grab)
    with pytest.raises(SystemExit):
        cos_main(["list"])
    sub = next(a for a in seen[""]._actions if isinstance(a, argparse._SubParsersAction))
    return {"": seen[""], **sub.choices}


def test_every_cli_argument_has_help(monkeypatch):
    bare = []
    for verb, p in parsers(monkeypatch).items():
        if verb in ("train", "evaluate"):          # handed whole to python -m cos.train / cos.evaluate
            continue
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                continue
            if not (a.help and a.help.strip()):
                bare.append(f"cos {verb} {'/'.join(a.option_strings) or a.dest}")
    assert not bare, f"arguments without help: {bare}"


def test_cos_run_help_lists_every_forwarded_option(capsys):
    from _pytest.config.argparsing import Parser

    from cos.pytest_plugin import pytest_addoption

    parser = Parser(_ispytest=True)
    pytest_addoption(parser)
    names = [n for g in parser._groups for o in g.options for n in o.names()]
    assert len(names) > 10 and all(n.startswith("--cos-") for n in names)
    with pytest.raises(SystemExit):
        cos_main(["run", "--help"])
    out = capsys.readouterr().out
    assert [n for n in names if n not in out] == []


def test_docs_claims_md_is_current():
    from cos.scaffold import claims_markdown

    assert (ROOT / "docs" / "claims.md").read_text() == claims_markdown(), \
        "docs/claims.md is stale: cos list --format markdown > docs/claims.md"


def test_readme_points_at_the_generated_claims_and_is_short():
    readme = (ROOT / "README.md").read_text()
    assert "docs/claims.md" in readme and "CLAIMS.md" not in readme
    assert len(readme.splitlines()) <= 150
    for doc in ("docs/adding-a-claim.md", "docs/design.md", "docs/results.md", "CHANGELOG.md"):
        assert doc in readme and (ROOT / doc).exists(), doc


def test_a_claim_from_the_skeleton_keeps_the_contract(tmp_path, capsys):
    from cos.registry import get_claim, unregister
    from cos.reporting import provenance, write_status
    from tests.test_claims_contract import check_contract

    path = tmp_path / "scaffolded.py"
    assert cos_main(["new-claim", "toy.scaffolded", "--out", str(path)]) == 0
    assert cos_main(["new-claim", "toy.scaffolded", "--out", str(path)]) == 2       # never overwrites
    assert cos_main(["new-claim", "Not An Id"]) == 2
    text = path.read_text()
    assert "def measure_batch(" in text and "def conclude(" in text and "def measure(" not in text
    assert "clean_rows(" not in text and "EFFECT = None" in text and 'effect_note="chosen: TODO' in text
    # an author fills the placeholders: the effect a run is sized for, and where it comes from
    path.write_text(text.replace("EFFECT = None", "EFFECT = 0.1").replace(
        'effect_note="chosen: TODO', 'effect_note="chosen: the toy\'s smallest effect that counts; was TODO'))
    spec = importlib.util.spec_from_file_location("scaffolded_claim", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    try:
        spec.loader.exec_module(mod)             # registers the claim, as a module of cos/claims/ would
        claim = get_claim("toy.scaffolded")
        from cos.registry import Claim

        assert claim.by_records and type(claim).measure is Claim.measure     # records, run by measure_records
        assert claim.spec.effect == 0.1 and claim.spec.effect_note.startswith("chosen: ")
        statuses = {k.kind: k.run(claim).status for k in claim.controls()}   # the skeleton's trivial measure
        assert statuses == {"positive": "holds", "negative": "inconclusive"}, statuses
        write_status(tmp_path / "run", [claim.controls()[0].run(claim)], provenance())
        base = tmp_path / "baseline.json"
        assert cos_main(["baseline", "add", str(tmp_path / "run"), "--into", str(base), "-k", "toy.scaffolded"]) == 0
        assert cos_main(["baseline", "add", str(tmp_path / "run"), "--into", str(base)]) == 2   # add never replaces
        assert cos_main(["baseline", "update", str(tmp_path / "run"), "--into", str(base)]) == 0
        doc = json.loads(base.read_text())
        assert [r["id"] for r in doc["claims"]] == ["toy.scaffolded"] and "toy.scaffolded" in doc["row_sources"]
        check_contract(claim, doc["claims"][0], tmp_path)
    finally:
        unregister("toy.scaffolded")
        sys.modules.pop(spec.name, None)
    assert "updated toy.scaffolded" in capsys.readouterr().out
