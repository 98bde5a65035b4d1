"""Read a probe profile (``hpccloud probe --json``) from a file: the I/O edge of the pure checks.

The checks themselves live in :func:`hpccloud.balance.profile.profile_from_doc`
(pure, no file access); ``hpccloud plan --profile`` and ``hpccloud run
--profile`` read the file here.
"""

from __future__ import annotations

import json
from typing import Any

from hpccloud.errors import ConfigError

#: a probe profile of 10^5 ranks keeps per-region-pair links, not a dense matrix
PROFILE_MAX_BYTES = 1 << 30


def read_profile_doc(path: str) -> dict[str, Any]:
    """The parsed JSON of ``path``; unreadable or not JSON -> one :class:`ConfigError` naming it."""
    from hpccloud.io.small import read_regular

    fix = "pass the file written by `hpccloud probe --json FILE`."
    raw = read_regular(path, PROFILE_MAX_BYTES, "probe profile", fix)
    if len(raw) > PROFILE_MAX_BYTES:
        raise ConfigError(f"{path}: over {PROFILE_MAX_BYTES >> 20} MiB: not a probe profile. Fix: {fix}")
    try:
        return json.loads(raw.decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}). Fix: {fix}") from None
    except RecursionError:
        raise ConfigError(f"{path}: JSON nested too deeply. Fix: {fix}") from None


def load_profile(path: str) -> dict[str, Any]:
    """Read and check a probe profile: ``hosts``, ``rank_regions``, ``speed_units_per_s``, ``links``."""
    from hpccloud.balance.profile import profile_from_doc

    return profile_from_doc(read_profile_doc(path), path)
