"""Read a probe profile (``hpccloud probe --json``) from a file: the I/O edge of the pure checks.

The checks themselves live in :func:`hpccloud.balance.profile.profile_from_doc`
(pure, no file access); ``hpccloud plan --profile`` and ``hpccloud run
--profile`` read the file here.
"""

from __future__ import annotations

import json
from typing import Any

from hpccloud.errors import ConfigError


def read_profile_doc(path: str) -> dict[str, Any]:
    """The parsed JSON of ``path``; unreadable or not JSON -> one :class:`ConfigError` naming it."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the profile ({exc.strerror}). "
                          "Fix: pass the file written by `hpccloud probe --json FILE`.") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON ({exc}). "
                          "Fix: pass the file written by `hpccloud probe --json FILE`.") from None


def load_profile(path: str) -> dict[str, Any]:
    """Read and check a probe profile: ``hosts``, ``rank_regions``, ``speed_units_per_s``, ``links``."""
    from hpccloud.balance.profile import profile_from_doc

    return profile_from_doc(read_profile_doc(path), path)
