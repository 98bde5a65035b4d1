"""What a result file says about the run that wrote it: run id, step, workload, digest.

The publish stage attaches :func:`provenance` to every HDF5 file it writes, so a
file found on its own still says which run, step, workload, parameters and
hpccloud version made it, and :func:`config_digest` tells two runs with the same
settings apart from two that only look alike.

>>> config_digest({"steps": 6, "workload": "stencil2d"}) == config_digest({"workload": "stencil2d", "steps": 6})
True
>>> meta = provenance(run_id="r1", step=6, workload="stencil2d", params={"n": 96}, config={"steps": 6})
>>> meta["param_n"], meta["step"], meta["parameters"]
(96, 6, '{"n": 96}')
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import uuid
from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np


class Axis(NamedTuple):
    """One dimension of a result array: its name, coordinate values, units and long name.

    >>> Axis("x", np.arange(3) + 0.5, "m").units
    'm'
    """

    name: str
    values: Any
    units: str | None = None
    long_name: str = ""


def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_digest(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of ``config`` as canonical JSON: keys sorted, no blanks."""
    return hashlib.sha256(_canonical(dict(config)).encode()).hexdigest()


def new_run_id() -> str:
    """A sortable, unique run id: UTC start time and 8 random hex digits."""
    now = _dt.datetime.now(_dt.UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


def provenance(*, run_id: str, step: int, workload: str, params: Mapping[str, Any],
               config: Mapping[str, Any], ranks: int | None = None,
               topology: str | None = None) -> dict[str, Any]:
    """Attributes that make a result file self-describing.

    Parameters
    ----------
    run_id : str
        The job's id (the same in every file of one run).
    step : int
        Steps completed when the data was written.
    workload, params : str, mapping
        The workload and its full parameter set; each scalar parameter is also
        stored on its own as ``param_<name>`` so tools that list attributes show it.
    config : mapping
        The run's settings; only their :func:`config_digest` is stored.
    ranks, topology : optional
        The rank count and the topology's name.
    """
    from hpccloud import __version__

    meta: dict[str, Any] = {
        "hpccloud_version": __version__,
        "run_id": str(run_id),
        "step": int(step),
        "workload": str(workload),
        "parameters": json.dumps(dict(params), sort_keys=True, default=str),
        "config_digest": config_digest(config),
        "created_utc": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if ranks is not None:
        meta["ranks"] = int(ranks)
    if topology is not None:
        meta["topology"] = str(topology)
    for key, value in sorted(params.items()):
        if isinstance(value, bool | int | float | str):
            meta[f"param_{key}"] = value
    return meta


def attr_value(value: Any) -> Any:
    """``value`` as something h5py stores as a plain attribute (nested data as JSON text)."""
    if isinstance(value, bool | np.bool_):
        return np.bool_(value)
    if isinstance(value, int | float | str | np.generic | np.ndarray):
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, int | float) and
                                                         not isinstance(v, bool) for v in value):
        return np.asarray(value)
    return json.dumps(value, sort_keys=True, default=str)


__all__ = ["Axis", "attr_value", "config_digest", "new_run_id", "provenance"]
