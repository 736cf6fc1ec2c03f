"""A run keeps what it finished: the rows so far are written as each claim finishes (claims-status.partial.json)
and the final table replaces them."""
from __future__ import annotations

import json

from cos.registry import ClaimResult
from cos.reporting import PARTIAL, write_partial, write_status


def _row(cid: str, status: str = "holds") -> ClaimResult:
    r = ClaimResult(id=cid, title=cid, paper_ref="-", paper_value="-", measured=0.5, ci_low=0.1, ci_high=0.9, n=8,
                    status=status, version=1)
    r.samples = [{"claim": cid, "instance": 0, "values": [0.5]}]
    return r


def test_partial_rows_are_written_and_replaced_by_the_final_table(tmp_path):
    write_partial(tmp_path, [_row("a.one")])
    write_partial(tmp_path, [_row("a.one"), _row("b.two", "fails")])
    doc = json.loads((tmp_path / PARTIAL).read_text())
    assert doc["partial"] is True and [c["id"] for c in doc["claims"]] == ["a.one", "b.two"]
    assert doc["claims"][1]["status"] == "fails" and doc["claims"][0]["samples"][0]["instance"] == 0
    assert not list(tmp_path.glob("*.tmp"))
    write_status(tmp_path, [_row("a.one"), _row("b.two", "fails")], {"model": "m"})
    assert (tmp_path / "claims-status.json").exists() and not (tmp_path / PARTIAL).exists()


def test_a_rows_dict_does_not_copy_what_is_written_elsewhere():
    # the partial table serialises every finished row as each claim finishes: to_dict must not deep-copy a row's
    # records, samples and arrays (its largest part, written to records.jsonl, samples.jsonl and data/) only to
    # drop them; the dict is otherwise asdict's
    class NoCopy:
        def __deepcopy__(self, memo):
            raise AssertionError("deep-copied")

    r = _row("a.one")
    r.details = {"per_instance": {"x": [0.5, 0.25]}}
    r.arrays, r.samples, r.records = {"a": NoCopy()}, [NoCopy()], {"records": [NoCopy()]}
    d = r.to_dict()
    assert not {"arrays", "samples", "records"} & set(d) and d["details"] == r.details
    assert d["details"] is not r.details and d["details"]["per_instance"]["x"] is not r.details["per_instance"]["x"]
