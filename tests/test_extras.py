"""A missing optional dependency gives one "install hpccloud[extra]" message and exit 2, no traceback."""

from __future__ import annotations

import sys

import pytest

from hpccloud.testing.mpi_pytest import child_env, run_mpi

# hpccloud's CLI in a Python where `cryptography` cannot be imported (as after
# `pip install '.[mpich]'` without the crypto extra)
NO_CRYPTO = """
import sys
sys.modules["cryptography"] = None  # import fails, find_spec says missing
from hpccloud.cli import main
raise SystemExit(main())
"""


@pytest.fixture
def no_crypto(tmp_path):
    script = tmp_path / "hpccloud_no_crypto.py"
    script.write_text(NO_CRYPTO)
    return [sys.executable, str(script)]


def _one_message(res, extra: str) -> None:
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    assert res.stderr.count(f"pip install 'hpccloud[{extra}]'") == 1, res.stderr
    assert "Traceback" not in res.stderr, res.stderr


def test_bench_transport_without_cryptography(no_crypto):
    res = run_mpi([*no_crypto, "bench", "transport", "--sizes-mib", "1"], 2, 120, env=child_env(2))
    _one_message(res, "crypto")
    assert "`hpccloud bench transport` needs the Python package 'cryptography'" in res.stderr


def test_run_key_file_without_cryptography(no_crypto, tmp_path):
    key = tmp_path / "k"
    key.write_bytes(b"0" * 32)
    res = run_mpi([*no_crypto, "run", "--param", "n=64", "--steps", "2", "--key-file", str(key)],
                  2, 120, env=child_env(2))
    _one_message(res, "crypto")
    assert "--key-file" in res.stderr


def test_a_stray_import_error_becomes_the_same_message(monkeypatch, capsys):
    import hpccloud.commands.report as report
    from hpccloud.cli import main

    def no_matplotlib(args):
        raise ModuleNotFoundError("No module named 'matplotlib'", name="matplotlib")

    monkeypatch.setattr(report, "run", no_matplotlib)
    assert main(["report", "whatever.json"]) == 2
    err = capsys.readouterr().err
    assert err.count("pip install 'hpccloud[plot]'") == 1 and "Traceback" not in err, err


def test_other_import_errors_still_show_their_traceback(monkeypatch, capsys):
    import hpccloud.commands.report as report
    from hpccloud.cli import main

    def broken(args):
        raise ModuleNotFoundError("No module named 'nonexistent_xyz'", name="nonexistent_xyz")

    monkeypatch.setattr(report, "run", broken)
    assert main(["report", "whatever.json"]) == 1
    assert "Traceback" in capsys.readouterr().err
