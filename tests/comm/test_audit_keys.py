"""Audit log appends never leave a torn line; key files follow one documented rule."""

import os
import stat
import subprocess
import sys
import textwrap
import warnings

import pytest

from hpccloud.comm.audit import AuditLog, TransferRecord, read_audit
from hpccloud.errors import ChecksumError, ConfigError
from hpccloud.keys import KeyFileWarning, load_key


def _rec(i):
    return TransferRecord(float(i), i, "public", 0, 1, "eu-north", "us-east", 8, 1e-6, "00ff")


def test_append_hitting_a_file_size_limit_is_undone(tmp_path):
    """A real short write: RLIMIT_FSIZE stops the append part-way (as a full disk does)."""
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append([_rec(0), _rec(1)])
    size = path.stat().st_size
    code = textwrap.dedent(f"""
        import resource, signal, sys
        from hpccloud.comm.audit import AuditLog, TransferRecord
        from hpccloud.errors import HpccloudError
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, ({size} + 100, {size} + 100))
        recs = [TransferRecord(float(i), i, "public", 0, 1, "a", "b", 8, 1e-6, "00") for i in range(50)]
        try:
            AuditLog({str(path)!r}).append(recs)
        except HpccloudError as exc:
            print(exc)
            sys.exit(3)
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert res.returncode == 3, res.stderr
    assert "cannot append 50 audit records" in res.stdout and "Fix:" in res.stdout
    assert path.stat().st_size == size  # the partial block was cut off again
    assert [r["shard_id"] for r in read_audit(path)] == [0, 1]


def test_reader_reports_a_torn_tail(tmp_path):
    path = tmp_path / "audit.jsonl"
    AuditLog(path).append([_rec(0), _rec(1)])
    with open(path, "ab") as fh:
        fh.write(b'{"shard_id": 2, "time"')
    with pytest.raises(ChecksumError, match=r"audit.jsonl: its last line is torn.*head -n 2"):
        read_audit(path)
    path.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
    with pytest.raises(ChecksumError, match="line 2 is not a JSON record"):
        read_audit(path)


def _key(tmp_path, data: bytes, mode=0o600):
    p = tmp_path / "key"
    p.write_bytes(data)
    os.chmod(p, mode)
    return p


def test_key_rule(tmp_path):
    assert load_key(_key(tmp_path, b"ab" * 16)) == bytes.fromhex("ab" * 16)  # 32 hex: 16 bytes
    assert load_key(_key(tmp_path, b"ab" * 32 + b"\n")) == bytes.fromhex("ab" * 32)
    assert load_key(_key(tmp_path, b"  " + b"0f" * 24 + b"\r\n")) == bytes.fromhex("0f" * 24)
    raw = bytes(range(200, 232))  # 32 raw bytes, not hex
    assert load_key(_key(tmp_path, raw)) == raw
    assert load_key(_key(tmp_path, raw[:16])) == raw[:16]
    for bad in (b"ab" * 20, b"x" * 20, b"", b"zz" * 16 + b"\n\n\n"):
        with pytest.raises(ConfigError, match="not an AES key.*Fix:"):
            load_key(_key(tmp_path, bad))


def test_key_from_a_device_or_huge_file_is_bounded(tmp_path):
    with pytest.raises(ConfigError, match="/dev/zero: a character device, not a regular file"):
        load_key("/dev/zero")
    with pytest.raises(ConfigError, match="over 65 bytes"):
        load_key(_key(tmp_path, b"0" * 10_000))
    with pytest.raises(ConfigError, match="cannot read the transport key file"):
        load_key(tmp_path / "missing")


def test_readable_key_warns_once(tmp_path):
    p = _key(tmp_path, b"ab" * 16, 0o644)
    with pytest.warns(KeyFileWarning, match=r"mode 644\). Fix: chmod 600"):
        load_key(p)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_key(p, warn=False)
        os.chmod(p, stat.S_IRUSR)
        load_key(p)
