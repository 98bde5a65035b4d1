"""Bad command lines: exit 2 with one message, no traceback, printed once — at 1 and 2 ranks."""

import os
import sys

import pytest

from hpccloud.testing.mpi_pytest import child_env, run_group, run_mpi

BAD_TOPOLOGY = '''[[regions]]
name = "eu"
jurisdiction = "EU"
price_per_core_hour = {price}
hosts = [{hosts}]
'''


def _check(res, match):
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("hpccloud: error")]
    assert res.returncode == 2, (res.returncode, res.stderr[-2000:])
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    assert len(errors) == 1, res.stderr[-2000:]
    assert match in errors[0] and "Fix:" in errors[0], errors[0]


def _topology(tmp_path, price="0.05", hosts='"n[1-2]"'):
    path = tmp_path / "t.toml"
    path.write_text(BAD_TOPOLOGY.format(price=price, hosts=hosts))
    return str(path)


ONE_RANK = [
    (["run", "--param", "n=0", "--steps", "1"], "parameter n=0 must be >= 1"),
    (["run", "--workload", "kmeans", "--param", "k=9", "--param", "n=4", "--steps", "1"],
     "k=9 clusters for n=4 points"),
    (["info", "--topology", "{nan}"], "must be a finite number"),
]


@pytest.mark.parametrize("argv,match", ONE_RANK, ids=["n=0", "k>n", "nan-price"])
def test_one_rank(tmp_path, argv, match):
    argv = [a.replace("{nan}", _topology(tmp_path, price="nan")) for a in argv]
    res = run_group([sys.executable, "-m", "hpccloud", *argv], 120, env=child_env(1))
    _check(res, match)


TWO_RANKS = [
    (["info", "--topology", "{huge}"], "names more than 1,000,000 hosts"),
    (["run", "--param", "period=0", "--steps", "1"], "period=0 must be >= 1"),
]


@pytest.mark.parametrize("argv,match", TWO_RANKS, ids=["huge-hostlist", "period=0"])
def test_two_ranks_refuse_once(tmp_path, argv, match):
    argv = [a.replace("{huge}", _topology(tmp_path, hosts='"n[0-99999999]"')) for a in argv]
    res = run_mpi([sys.executable, "-m", "hpccloud", *argv], 2, 120,
                  env=child_env(2, {"PYTHONPATH": os.getcwd()}))
    _check(res, match)
