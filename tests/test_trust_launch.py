"""Issue 28, launches: a launch that started fewer processes than it asked for, or whose processes disagree about
their world, ends with one line naming the problem and a nonzero exit; it neither hangs nor writes a table.

The environment is checked before anything connects (`launch_env`), the gathered views after every rank joined
(`check_world`), and a rank that never joins is bounded by the join timeout (`world_from_env`, through pytest)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cos.errors import InputError
from cos.parallel import check_world, launch_env, launched_size

ROOT = Path(__file__).resolve().parent.parent
LAUNCH_VARS = ("WORLD_SIZE", "RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",
               "COS_DIST_TIMEOUT_S", "COS_DIST_JOIN_TIMEOUT_S")
GOOD = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29500"}


def one_line(msg: str, *words: str) -> None:
    assert "\n" not in msg.strip() and "Traceback" not in msg, msg
    for w in words:
        assert w in msg, (w, msg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


ENV_CASES = [
    # (case, changes to a good 2-process environment (None: unset), words of the one line)
    ("WORLD_SIZE not a number", {"WORLD_SIZE": "two"}, ["WORLD_SIZE='two'", "integer >= 1"]),
    ("WORLD_SIZE zero", {"WORLD_SIZE": "0"}, ["WORLD_SIZE='0'", "integer >= 1"]),
    ("RANK missing", {"RANK": None}, ["RANK is not set", "WORLD_SIZE=2"]),
    ("RANK past the world", {"RANK": "2"}, ["RANK='2'", "<= 1"]),
    ("RANK negative", {"RANK": "-1"}, ["RANK='-1'", ">= 0"]),
    ("LOCAL_WORLD_SIZE above WORLD_SIZE", {"LOCAL_WORLD_SIZE": "3"}, ["LOCAL_WORLD_SIZE='3'", "<= 2"]),
    ("LOCAL_WORLD_SIZE not a number", {"LOCAL_WORLD_SIZE": "2.0"}, ["LOCAL_WORLD_SIZE='2.0'", "integer"]),
    ("LOCAL_RANK past the node", {"LOCAL_RANK": "2"}, ["LOCAL_RANK='2'", "<= 1"]),
    ("LOCAL_RANK missing on a multi-node launch", {"LOCAL_WORLD_SIZE": "1", "LOCAL_RANK": None},
     ["LOCAL_RANK is not set"]),
    ("MASTER_ADDR missing", {"MASTER_ADDR": None}, ["MASTER_ADDR is not set"]),
    ("MASTER_PORT zero", {"MASTER_PORT": "0"}, ["MASTER_PORT='0'", ">= 1"]),
    ("MASTER_PORT not a port", {"MASTER_PORT": "http"}, ["MASTER_PORT='http'", "<= 65535"]),
    ("timeout not a number", {"COS_DIST_TIMEOUT_S": "soon"}, ["COS_DIST_TIMEOUT_S='soon'", "seconds > 0"]),
    ("timeout infinite", {"COS_DIST_TIMEOUT_S": "inf"}, ["COS_DIST_TIMEOUT_S='inf'", "seconds > 0"]),
    ("join timeout zero", {"COS_DIST_JOIN_TIMEOUT_S": "0"}, ["COS_DIST_JOIN_TIMEOUT_S='0'", "seconds > 0"]),
]


@pytest.fixture
def launch_vars(monkeypatch):
    """A clean launcher environment for this test; returns a setter (None unsets)."""
    for k in LAUNCH_VARS:
        monkeypatch.delenv(k, raising=False)

    def put(env: dict) -> None:
        for k, v in env.items():
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, v)
    return put


@pytest.mark.parametrize("case,change,words", ENV_CASES, ids=[c[0] for c in ENV_CASES])
def test_malformed_launch_env_is_one_line(launch_vars, case, change, words):
    launch_vars({**GOOD, **change})
    with pytest.raises(InputError) as e:
        launch_env()
    one_line(str(e.value), *words)


def test_good_launch_env_and_alone(launch_vars):
    launch_vars(GOOD)
    env = launch_env()
    assert (env.rank, env.size, env.local_rank, env.local_size) == (0, 2, 0, 2)
    assert env.join_timeout_s == 600 and env.timeout_s == 48 * 3600
    launch_vars({"COS_DIST_TIMEOUT_S": "5"})     # a short run timeout bounds the join too
    assert launch_env().join_timeout_s == 5
    launch_vars({"WORLD_SIZE": "1"})
    assert launch_env() is None and launched_size() == 1
    launch_vars({"WORLD_SIZE": "two"})           # launched as far as the plugin can tell: refused, not run alone
    assert launched_size() == 2


def view(rank: int, size: int = 2, local_rank: int | None = None, local_size: int = 2, host: str = "a") -> dict:
    return {"rank": rank, "size": size, "local_rank": rank if local_rank is None else local_rank,
            "local_size": local_size, "host": host}


WORLD_CASES = [
    # (case, gathered views, words of the one line)
    ("WORLD_SIZE disagrees", [view(0), view(1, size=3)], ["2 processes joined", "WORLD_SIZE says 2, 3"]),
    ("fewer joined than WORLD_SIZE", [view(0, size=3), view(1, size=3)], ["2 processes joined", "says 3"]),
    ("RANK repeated", [view(0), view(0)], ["RANK values [0, 0]", "repeated: [0]"]),
    ("LOCAL_WORLD_SIZE inconsistent", [view(0), view(1, local_size=1)],
     ["2 processes on host a", "LOCAL_WORLD_SIZE says 1, 2"]),
    ("LOCAL_WORLD_SIZE off on one node of two", [view(0, 4, 0, 2, "a"), view(1, 4, 1, 2, "a"), view(2, 4, 0, 1, "b"),
                                                 view(3, 4, 1, 1, "b")], ["host b", "LOCAL_WORLD_SIZE says 1"]),
    ("LOCAL_RANK repeated", [view(0, local_rank=0), view(1, local_rank=0)], ["LOCAL_RANK values [0, 0]"]),
]


@pytest.mark.parametrize("case,views,words", WORLD_CASES, ids=[c[0] for c in WORLD_CASES])
def test_disagreeing_world_is_one_line(case, views, words):
    with pytest.raises(InputError) as e:
        check_world(views)
    one_line(str(e.value), *words)


def test_agreeing_worlds_pass():
    check_world([view(0), view(1)])
    check_world([view(0, 4, 0, 2, "a"), view(1, 4, 1, 2, "a"), view(2, 4, 0, 2, "b"), view(3, 4, 1, 2, "b")])


def _env(**kw: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_VARS and not k.startswith("PYTEST_")}
    return {**env, "PYTHONPATH": str(ROOT), "COS_CACHE_DIR": kw.pop("cache"), **kw}


def test_missing_rank_ends_the_run_with_one_line(tmp_path):
    """One process of a launch of 2 (the other never started): a one-line error within the join timeout, exit
    != 0, nothing written; before the fix it waited COS_DIST_TIMEOUT_S (48 h) and then gave a 30-line trace."""
    out = tmp_path / "out"
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "cos.testing", "-m", "claims", "-k", "energy_profile",
                        "--cos-instances", "1", "-p", "no:xdist", "-p", "no:cacheprovider", f"--cos-out={out}", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=55,
                       env=_env(WORLD_SIZE="2", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                MASTER_PORT=str(free_port()), COS_DIST_TIMEOUT_S="3", cache=str(tmp_path / "c")))
    text = (p.stdout + p.stderr).strip()
    assert p.returncode not in (0, 5), text
    lines = [ln for ln in text.splitlines() if ln.strip()]
    assert len(lines) == 1, text
    one_line(lines[0], "WORLD_SIZE=2", "within 3 s", "rank 0 waited")
    assert not (out / "claims-status.json").exists() and not (out / "claims-status.partial.json").exists()
    assert time.time() - t0 < 55


def test_malformed_env_through_pytest_is_one_line(tmp_path):
    """The plugin refuses a malformed launcher environment at configure, before anything connects."""
    p = subprocess.run([sys.executable, "-m", "pytest", "--pyargs", "cos.testing", "-m", "claims", "-k", "energy_profile",
                        "-p", "no:xdist", "-p", "no:cacheprovider", f"--cos-out={tmp_path / 'out'}", "-q"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=55,
                       env=_env(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT="29500", cache=str(tmp_path / "c")))
    text = (p.stdout + p.stderr).strip()
    assert p.returncode not in (0, 5) and len(text.splitlines()) == 1, text
    one_line(text, "RANK is not set")


def test_two_ranks_that_disagree_both_stop(tmp_path):
    """Two real processes that join but disagree about LOCAL_WORLD_SIZE: both end with the same one line."""
    code = ("import sys\nfrom cos.errors import CosError\nfrom cos.parallel import world_from_env\n"
            "try:\n    world_from_env()\nexcept CosError as e:\n    print(e); sys.exit(4)\nprint('joined')\n")
    port = str(free_port())
    common = dict(WORLD_SIZE="2", MASTER_ADDR="127.0.0.1", MASTER_PORT=port, COS_DIST_TIMEOUT_S="20",
                  cache=str(tmp_path / "c"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env=_env(RANK=str(r), LOCAL_RANK=lr, LOCAL_WORLD_SIZE=lws, **common))
             for r, lr, lws in ((0, "0", "2"), (1, "0", "1"))]   # rank 1 thinks it is alone on its node
    outs = [p.communicate(timeout=50)[0].strip() for p in procs]
    assert [p.returncode for p in procs] == [4, 4], outs
    for o in outs:
        one_line(o, "LOCAL_WORLD_SIZE says 1, 2", "2 processes on host")
