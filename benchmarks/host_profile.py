"""The host side of the organism's gpu tier on any machine: the claims run on the CPU at the gpu tier's shapes with
the transformer's forward replaced by a stub, under cProfile, and the top entries are printed.

    python benchmarks/host_profile.py [--top 40] [--out DIR] [-- extra pytest args, e.g. -k information_flow]

The stub returns 0.1·x_s + 0.01·(the condition's last channels), so every number the claims print is meaningless;
what is measured is the Python and CPU work around the forwards (drawing instances, read-backs, mixtures, scores,
CKA, bootstraps, trajectories), which on a GPU host runs while the GPU idles. Claims that need the blocks to run
(activation captures) may fail early: pytest's summary lists them. The run's table is written to --out (a folder of
its own: one already holding a table is refused, and no result store is kept, so stub numbers never pass for a
run). Written for issue 26, when no GPU was at hand: it found instance drawing (~17 of 160 profiled seconds) and
information_flow's per-row patches (~5 s) on a 2-core VM.
"""
from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


class StubForwards:
    """A pytest plugin: while the session runs, `Sampler._forward` is the cheap stub; restored afterwards."""

    def pytest_sessionstart(self, session) -> None:
        import cos.sampler as sampler

        self._sampler, self._orig = sampler.Sampler, sampler.Sampler._forward

        def stub(s, model, x, t, embeds, name):
            s.forward_count += 1
            c = model.config.out_channels
            return x[:, :c] * 0.1 + x[:, -c:] * 0.01
        sampler.Sampler._forward = stub

    def pytest_sessionfinish(self, session) -> None:
        self._sampler._forward = self._orig


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--out", default="/tmp/cos-host-profile", help="--cos-out of the run")
    ap.add_argument("pytest_args", nargs="*")
    a = ap.parse_args()
    if (Path(a.out) / "claims-status.json").exists() and not (Path(a.out) / ".host-profile").exists():
        ap.error(f"--out {a.out}: holds a claims table that this script did not write; give a folder of its own")
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / ".host-profile").write_text("written by benchmarks/host_profile.py: stubbed forwards\n")
    args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-m", "claims", "--cos-tier", "gpu", "--cos-device", "cpu",
            f"--cos-out={a.out}", "--cos-overwrite", "--cos-store", "none", "-q",
            str(ROOT / "claims" / "test_claims.py"), *a.pytest_args]
    prof = cProfile.Profile()
    t0 = time.perf_counter()
    rc = prof.runcall(pytest.main, args, plugins=[StubForwards()])
    wall = time.perf_counter() - t0
    for key, only in (("tottime", ()), ("cumulative", ("/cos/",))):
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats(key).print_stats(*only, a.top)
        print(s.getvalue())
    print(f"host profile: {wall:.1f} s under cProfile, pytest exit code {int(rc)}")
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
