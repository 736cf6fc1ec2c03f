"""Fixtures of the claims tier: the settings of the tier the run is in (see `cos.pytest_plugin.resolve_tier`)."""
from dataclasses import replace

import pytest

from cos.claimkit import estimate_forwards, settings_for
from cos.pytest_plugin import resolve_tier


@pytest.fixture(scope="session")
def cos_tier(pytestconfig) -> str:
    return resolve_tier(pytestconfig)


@pytest.fixture(scope="session")
def cos_settings(cos_system, cos_tier, pytestconfig, request):
    s = settings_for(cos_system, cos_tier)
    if pytestconfig.getoption("--cos-instances"):
        s = replace(s, instances=pytestconfig.getoption("--cos-instances"),
                    swap_instances=min(s.swap_instances, pytestconfig.getoption("--cos-instances")))
    if pytestconfig.getoption("--cos-size"):
        try:
            h, w, f = (int(x) for x in pytestconfig.getoption("--cos-size").lower().split("x"))
        except ValueError:
            raise pytest.UsageError(f"--cos-size {pytestconfig.getoption('--cos-size')!r}: expected HxWxF, e.g. 480x832x81")
        s = replace(s, height=h, width=w, num_frames=f)
    if pytestconfig.getoption("--cos-steps"):
        s = replace(s, steps=pytestconfig.getoption("--cos-steps"))
    if pytestconfig.getoption("--cos-tasks"):
        from cos.tasks import TASKS, suite  # noqa: F401  (importing the suite registers the tasks)

        tasks = tuple(t.strip() for t in pytestconfig.getoption("--cos-tasks").split(",") if t.strip())
        bad = [t for t in tasks if t not in TASKS]
        if bad:
            raise pytest.UsageError(f"--cos-tasks: unknown task(s) {bad}; known: {sorted(TASKS)}")
        s = replace(s, tasks=tasks)
    if cos_tier == "full" and cos_system.encode_prompt is not None and hasattr(cos_system.encode_prompt, "precompute"):
        from cos.claimkit import instances

        prompts = {i.prompt for sp in ("id", "ood") for i in instances(replace(s, split=sp))} | {""}
        cos_system.encode_prompt.precompute(prompts)       # encode every prompt first, then free UMT5
        cos_system.encode_prompt.release()
    if cos_tier in ("full", "gpu"):
        ids = [item.get_closest_marker("claim").args[0] for item in request.session.items
               if item.get_closest_marker("claim") is not None]
        est = estimate_forwards(cos_system, s, ids)
        eta = est["eta_s"]
        msg = (f"[cos] {est['row_forwards']} row-forwards planned for {len(ids)} claims at "
               f"{est['seconds_per_row_forward']:.3f} s each (measured): ETA "
               + (f"{eta / 3600:.1f} h" if eta >= 3600 else f"{eta / 60:.1f} min"))
        capman = pytestconfig.pluginmanager.getplugin("capturemanager")
        tr = pytestconfig.pluginmanager.getplugin("terminalreporter")
        with capman.global_and_fixture_disabled():     # shown before the long work starts, not after
            tr.write_line(msg) if tr else print(msg)
    return s
