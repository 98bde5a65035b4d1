"""AES key files for sealing cross-region transfers.

The rule, in order:

1. The file is read up to :data:`MAX_KEY_FILE_BYTES` (65) bytes; a longer file
   (or a device like ``/dev/zero``) is not a key file and is refused.
2. If the file is hex text (optionally ending in one newline or surrounding
   blanks) of 32, 48 or 64 hex digits, the key is those digits decoded: 16, 24
   or 32 bytes. **Hex wins**: a 32-byte file of hex digits is a 16-byte key, not
   32 raw bytes (random raw bytes are all hex digits with probability 2⁻⁹⁶).
3. Otherwise a file of exactly 16, 24 or 32 bytes is the raw key.

A key file that the group or others may read gets one warning (the key is a
secret: ``chmod 600 FILE``).

>>> import tempfile, os
>>> p = os.path.join(tempfile.mkdtemp(), "k")
>>> _ = open(p, "w").write("00" * 16 + "\\n")
>>> os.chmod(p, 0o600)
>>> len(load_key(p))
16
"""

from __future__ import annotations

import os
import re
import stat
import warnings

from hpccloud.errors import ConfigError

#: 64 hex digits and a newline: the longest sensible key file
MAX_KEY_FILE_BYTES = 65
KEY_SIZES = (16, 24, 32)
_HEX = re.compile(rb"\s*([0-9a-fA-F]+)\s*")


class KeyFileWarning(UserWarning):
    """A key file that others may read."""


def load_key(path: str | os.PathLike, warn: bool = True) -> bytes:
    """Read an AES key file (see the module docstring for the rule); raise
    :class:`~hpccloud.errors.ConfigError` naming the file and the fix.

    ``warn=False`` skips the readable-by-others warning (give it on all ranks but
    one, so a job warns once).
    """
    source = os.fspath(path)
    from hpccloud.io.small import read_regular

    raw = read_regular(source, MAX_KEY_FILE_BYTES, "transport key file", "check the key file path")
    try:
        mode = os.stat(source).st_mode
    except OSError:
        mode = 0
    fix = ("write 16, 24 or 32 random bytes, or their hex (e.g. `openssl rand -hex 32 > key; "
           "chmod 600 key`)")
    if len(raw) > MAX_KEY_FILE_BYTES:
        raise ConfigError(f"{source}: over {MAX_KEY_FILE_BYTES} bytes: not an AES key file. Fix: {fix}")
    m = _HEX.fullmatch(raw)
    if m and len(m.group(1)) // 2 in KEY_SIZES and len(m.group(1)) % 2 == 0:
        key = bytes.fromhex(m.group(1).decode("ascii"))
    elif len(raw) in KEY_SIZES:
        key = raw
    else:
        raise ConfigError(f"{source}: not an AES key ({len(raw)} bytes, neither 16/24/32 raw bytes "
                          f"nor 32/48/64 hex digits). Fix: {fix}")
    if warn and stat.S_ISREG(mode) and mode & (stat.S_IRWXG | stat.S_IRWXO):
        warnings.warn(f"{source}: the key file may be read by its group or others (mode "
                      f"{stat.S_IMODE(mode):o}). Fix: chmod 600 {source}", KeyFileWarning, stacklevel=2)
    return key


__all__ = ["KEY_SIZES", "MAX_KEY_FILE_BYTES", "KeyFileWarning", "load_key"]
