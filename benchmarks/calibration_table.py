"""The README's calibration table from two `cos validate` outputs (CPU tier and GPU tier):

    python benchmarks/calibration_table.py CPU_DIR/calibration.json GPU_DIR/calibration.json
"""
from __future__ import annotations

import json
import sys


def cell(v: dict | None) -> str:
    return "–" if not v else f"{v['holds']}/{v['draws']} [{v['ci'][0]:.2f}, {v['ci'][1]:.2f}]"


def main(cpu_path: str, gpu_path: str) -> None:
    cpu, gpu = (json.load(open(p)) for p in (cpu_path, gpu_path))
    pc, pg = cpu["provenance"], gpu["provenance"]
    print(f"CPU tier: {pc['draws']} draws per control, {pc['jobs']} workers, {pc['wall_s']:.0f} s, {pc['cpus']} CPUs, "
          f"torch {pc['torch']}. GPU tier (4× the instances): {pg['draws']} draws, {pg['jobs']} workers, "
          f"{pg['wall_s']:.0f} s on a {pg['cpus']}-CPU device host, torch {pg['torch']}. Holds / draws [Wilson 95%].\n")
    print("| claim | power, CPU tier | FPR, CPU tier | MDE (CPU) | power, GPU tier | FPR, GPU tier | MDE (GPU) | "
          "sensitivity controls (GPU tier; CPU tier) |")
    print("|---|---|---|---|---|---|---|---|")
    for cid in sorted(cpu["claims"]):
        c, g = cpu["claims"][cid], gpu["claims"].get(cid, {})
        sens = [f"{n} {v['holds']}/{v['draws']}; {c['controls'].get(n, {}).get('holds', '–')}/"
                f"{c['controls'].get(n, {}).get('draws', '–')}"
                for n, v in g.get("controls", {}).items() if v["kind"] == "sensitivity"]
        mde = lambda x: "–" if x.get("min_detectable_effect") is None else f"{x['min_detectable_effect']:.3g}"
        print(f"| `{cid}` | {cell(c['planted'])} | {cell(c['null'])} | {mde(c)} | {cell(g.get('planted'))} | "
              f"{cell(g.get('null'))} | {mde(g)} | {', '.join(sens) or '–'} |")


if __name__ == "__main__":
    main(*sys.argv[1:3])
