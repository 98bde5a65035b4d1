"""The options of ``hpccloud run``: one definition for flags, TOML keys and validation.

:class:`RunConfig` is a typed ``msgspec.Struct``. Every field is both a
``--flag`` of ``hpccloud run`` and a key of a ``--config FILE.toml``; its help
text, metavar and the constraints checked before any work starts live in the
field's annotation. A config file is decoded *strictly* (``steps = "10"`` or
``initial_placement = "no"`` is refused, not guessed), unknown keys are
refused, and every problem is one :class:`~hpccloud.errors.ConfigError` naming
the file or flag, the key and the fix.

>>> cfg = config_from_mapping({"workload": "kmeans", "steps": 5}, "run.toml")
>>> cfg.workload, cfg.steps, cfg.balancer
('kmeans', 5, 'topo')
>>> config_from_mapping({"steps": "10"}, "run.toml")
Traceback (most recent call last):
...
hpccloud.errors.ConfigError: run.toml: steps: expected `int`, got `str` (value '10'). Fix: write e.g. steps = 60
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
import typing
from typing import Annotated, Any

import msgspec
from msgspec import Meta

from hpccloud.errors import ConfigError, InvalidArgument


def _opt(help: str, metavar: str | None = None, example: str | None = None) -> Meta:
    """Field metadata: help text, metavar and example for the flag and the error messages."""
    return Meta(description=help, extra={"metavar": metavar, "example": example})


Positive = Annotated[int, Meta(ge=1)]
NonNegative = Annotated[int, Meta(ge=0)]
PositiveSeconds = Annotated[float, Meta(gt=0)]
#: a probe message: every rank pair sends it, so the size bounds the probe's memory and time
ProbeSize = Annotated[int, Meta(ge=1, le=1 << 28)]


class RunConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Everything one ``hpccloud run`` job is told (see the module docstring)."""

    workload: Annotated[str, _opt("the workload to run (built-ins and the `hpccloud.workloads` "
                                  "entry points)", "NAME", '"stencil2d"')] = "stencil2d"
    params: Annotated[dict[str, Any], _opt("workload parameters ([params] table; flag: --param "
                                           "KEY=VALUE, repeatable)", example="{ n = 4096 }")] = \
        msgspec.field(default_factory=dict)
    steps: Annotated[Positive, _opt("steps to run", "N", "60")] = 60
    rebalance_every: Annotated[NonNegative, _opt("rebalance every K steps (0: never)", "K",
                                                 "10")] = 10
    first_rebalance: Annotated[NonNegative | None, _opt(
        "also rebalance after the first F steps, as soon as they measured the ranks (default: 3 "
        "when K >= 6; 0: only every K steps)", "F", "3")] = None
    initial_placement: Annotated[bool, _opt(
        "greedy/topo/metis: place the shards by a short speed probe before creating the data, so "
        "nothing has to move", example="true")] = True
    balancer: Annotated[str, _opt("the planner (static, even, greedy, topo, ...)", "NAME",
                                  '"topo"')] = "topo"
    horizon_steps: Annotated[Positive | None, _opt(
        "steps a rebalance must pay off within (default: the steps left; K where the "
        "workload models its load moving)", "H", "10")] = None
    defer_idle: Annotated[bool, _opt(
        "after two rebalances in a row that moved nothing, skip scheduled ones (1, then 3, "
        "7, ...) while the step time stays in the band the last plan saw; --no-defer-idle "
        "rebalances at every point", example="true")] = True
    calibrate: Annotated[bool, _opt(
        "refit the cost model (step fixed cost, per-shard dispatch, compute and halo scales, "
        "the rebalance's own cost, transport throughput per route) from each window and plan "
        "on it; --no-calibrate plans on the raw link and speed model", example="true")] = True
    seed: Annotated[NonNegative, _opt("random seed of the workload's data", "N", "0")] = 0
    checkpoint_every: Annotated[NonNegative, _opt("write a checkpoint every N steps (0: never)",
                                                  "N", "20")] = 0
    checkpoint_dir: Annotated[str | None, _opt("folder for checkpoints", "DIR", '"ckpt"')] = None
    restart: Annotated[str | None, _opt("resume from a checkpoint folder (any rank count; "
                                        "placed under this job's topology)", "CKPT",
                                        '"ckpt/step-00000020"')] = None
    input: Annotated[str | None, _opt("read the initial array from HDF5", "FILE.h5",
                                      '"field.h5"')] = None
    input_dataset: Annotated[str, _opt("dataset of --input", "NAME", '"data"')] = "data"
    output: Annotated[str | None, _opt("write one HDF5 file per region + catalogue.h5", "DIR",
                                       '"out"')] = None
    key_file: Annotated[str | None, _opt("AES-GCM key: encrypt cross-region transfers", "FILE",
                                         '"key.bin"')] = None
    audit: Annotated[str | None, _opt("append an audit record per transfer", "FILE.jsonl",
                                      '"audit.jsonl"')] = None
    profile: Annotated[str | None, _opt("use the links measured by `hpccloud probe --json` "
                                        "instead of a fresh probe", "PROBE.json",
                                        '"probe.json"')] = None
    json: Annotated[str | None, _opt("write the full report as JSON", "OUT",
                                     '"report.json"')] = None
    plots: Annotated[str | None, _opt("write PNG plots of the report here", "DIR",
                                      '"plots"')] = None
    trace: Annotated[str | None, _opt("write the per-rank timeline (kernel, halo, waits, "
                                      "rebalance phases, transfers) as Chrome trace-event JSON "
                                      "for Perfetto / chrome://tracing (FILE.json), or as an "
                                      "OTF2 archive (DIR.otf2, needs the otf2 package)",
                                      "FILE", '"trace.json"')] = None
    threads: Annotated[Positive | None, _opt("Numba threads per rank (default: cores of the "
                                             "node / ranks on it)", "N", "1")] = None
    quiet: Annotated[bool, _opt("print only the summary", example="true")] = False
    stall_timeout: Annotated[PositiveSeconds | None, _opt(
        "a rank that makes no progress for S seconds ends the job with exit code 75 and one "
        "message naming it (default 60, and at least 10x the slowest step)", "S", "60")] = None
    backup_dir: Annotated[tuple[str, ...], _opt(
        "also copy each checkpoint to PATH, storage in REGION: a rank file goes there only if "
        "every data class in it may live in REGION (flag repeatable)", "REGION=PATH",
        '["eu-north=/backup/ckpt"]')] = ()
    exclude_region: Annotated[tuple[str, ...], _opt(
        "run without this region of the topology, e.g. after losing it (flag repeatable)",
        "NAME", '["us-east"]')] = ()
    overwrite: Annotated[bool, _opt("replace the results of another run in --output (refused "
                                    "otherwise)", example="true")] = False
    allow_nonfinite: Annotated[bool, _opt("accept NaN and infinite values in --input (refused "
                                          "otherwise)", example="true")] = False
    probe_sizes: Annotated[tuple[ProbeSize, ...], Meta(min_length=1, max_length=16),
                           _opt("message sizes of the link probe [bytes] (1 B to 256 MiB, "
                                "1 to 16 sizes)", example="[8, 65536, 1048576]")] = \
        (8, 65536, 1 << 20)

    def validate(self, source: str = "the run options") -> None:
        """Check types, ranges and cross-field rules; raise one :class:`InvalidArgument`."""
        convert(msgspec.structs.asdict(self), source, InvalidArgument)
        for name in _TEXT:
            values = getattr(self, name)
            for value in values if isinstance(values, tuple) else (values,):
                if value is not None and (not value.strip() or "\0" in value):
                    what = "an empty value" if not value.strip() else "a NUL character"
                    raise InvalidArgument(f"{_flag(name)} {value!r}: {what}. Fix: give "
                                          f"{_extra(_fields()[name][1])['metavar'] or 'a value'}"
                                          f", or leave {_flag(name)} out")
        if self.checkpoint_every and not self.checkpoint_dir:
            raise InvalidArgument("--checkpoint-every needs --checkpoint-dir DIR. Fix: add "
                                  "--checkpoint-dir, or set checkpoint_every = 0")
        if self.backup_dir and not self.checkpoint_every:
            raise InvalidArgument("--backup-dir copies checkpoints: it needs --checkpoint-every N "
                                  "--checkpoint-dir DIR")
        names = balancer_names()
        if self.balancer not in names:
            raise InvalidArgument(f"--balancer {self.balancer!r}: no such planner. Fix: use one "
                                  f"of {list(names)}")


#: flags that are not option fields of their own
_NOT_FLAGS = {"params", "probe_sizes"}
#: text options (paths and names): an empty string is a mistake, never "not given"
_TEXT = ("workload", "checkpoint_dir", "restart", "input", "input_dataset", "output",
         "key_file", "audit", "profile", "json", "plots", "trace", "backup_dir",
         "exclude_region", "balancer")
#: repeatable flags (one value each), lists in a config file
_APPEND = {"backup_dir", "exclude_region"}


def balancer_names() -> tuple[str, ...]:
    """The planners ``--balancer`` accepts: the balance package's registry."""
    from hpccloud.balance import PLANNERS

    return tuple(PLANNERS)


def _plain(hint) -> type:
    """The Python type a flag parses into: ``int`` for ``Annotated[int, ...] | None``."""
    if typing.get_origin(hint) is Annotated:
        return _plain(typing.get_args(hint)[0])
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    if args and typing.get_origin(hint) is not dict and typing.get_origin(hint) is not tuple:
        return _plain(args[0])
    return hint


def _fields() -> dict[str, tuple[type, Meta]]:
    """Option name -> (the type a flag parses into, the Meta holding its help text)."""
    hints = typing.get_type_hints(RunConfig, include_extras=True)
    out = {}
    for name in RunConfig.__struct_fields__:
        meta = next(m for m in typing.get_args(hints[name])[1:]
                    if isinstance(m, Meta) and m.description)
        out[name] = (_plain(hints[name]), meta)
    return out


def _extra(meta: Meta) -> dict[str, Any]:
    """``meta.extra``: every RunConfig field sets it (metavar, example)."""
    return typing.cast("dict[str, Any]", meta.extra)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one flag per option field (defaults None: a flag given overrides the config file)."""
    parser.add_argument("--config", metavar="FILE.toml",
                        help="TOML with any of the options below as keys (flags win)")
    parser.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                        help="workload parameter, e.g. --param n=4096 (repeatable)")
    for name, (base, meta) in _fields().items():
        if name in _NOT_FLAGS:
            continue
        kind = base
        kw: dict[str, Any] = {"dest": name, "default": None, "help": meta.description}
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        elif name in _APPEND:
            kw.update(action="append", type=str, metavar=_extra(meta)["metavar"])
        else:
            kw["type"] = kind
            kw["metavar"] = _extra(meta)["metavar"]
        flag = _flag(name) if name != "horizon_steps" else "--horizon"
        parser.add_argument(flag, **kw)


_AT = re.compile(r" - at `\$\.?([^`]*)`$")


def convert(doc: dict[str, Any], source: str, error=ConfigError,
            flags: frozenset[str] = frozenset()) -> RunConfig:
    """Decode a mapping into a :class:`RunConfig` strictly; raise ``error`` naming the key.

    Keys in ``flags`` came from the command line and are named as flags (``--steps``);
    the others as keys of ``source`` (the config file).
    """
    try:
        return msgspec.convert(doc, RunConfig)
    except msgspec.ValidationError as exc:
        text = str(exc)
        unknown = re.match(r"Object contains unknown field `([^`]+)`", text)
        if unknown:
            known = sorted(RunConfig.__struct_fields__)
            raise error(f"{source}: {unknown.group(1)}: unknown option. Fix: use one of "
                        f"{known}") from None
        m = _AT.search(text)
        key = m.group(1).split(".")[0].split("[")[0] if m else ""
        problem = _AT.sub("", text)
        problem = problem[0].lower() + problem[1:]
        got = f" (value {doc[key]!r})" if key in doc and not isinstance(doc[key], dict) else ""
        if key in flags:
            raise error(f"{_flag(key)}: {problem}{got}. Fix: pass a valid value, e.g. "
                        f"{_flag(key)} {_example(key)}") from None
        example = _example(key)
        fix = f"write e.g. {key} = {example}" if example else "correct the value"
        raise error(f"{source}: {key or '<top level>'}: {problem}{got}. Fix: {fix}") from None


def _example(key: str) -> str | None:
    return _extra(_fields()[key][1])["example"] if key in RunConfig.__struct_fields__ else None


def config_from_mapping(doc: dict[str, Any], source: str) -> RunConfig:
    """A :class:`RunConfig` from a parsed config document (strict; pure)."""
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a table of options. Fix: write key = value lines")
    return convert(doc, source)


#: a run config is a page of options: a larger file is the wrong file
CONFIG_MAX_BYTES = 1 << 20


def read_config(path: str | None) -> dict[str, Any]:
    """Parse a ``--config`` TOML file into a plain mapping (no defaults filled in)."""
    if path is None:
        return {}
    from hpccloud.io.small import read_regular

    raw = read_regular(path, CONFIG_MAX_BYTES, "run config (TOML)", "check --config")
    if len(raw) > CONFIG_MAX_BYTES:
        raise ConfigError(f"{path}: over {CONFIG_MAX_BYTES // 1024} KiB: not a run config. Fix: "
                          "check --config")
    try:
        doc = tomllib.loads(raw.decode("utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc}). Fix: correct the syntax") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text. Fix: save the config file as UTF-8") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply. Fix: use plain key = value lines") from None
    config_from_mapping(doc, path)  # the file alone must be valid
    return doc


def parse_params(items: list[str]) -> dict[str, str]:
    """``["n=4096", ...]`` from ``--param`` into a mapping (values stay strings)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidArgument(f"--param {item!r}: expected KEY=VALUE. Fix: e.g. --param n=4096")
        out[key.strip()] = value.strip()
    return out


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The :class:`RunConfig` from ``--config`` and the flags (flags win; pure; raises)."""
    doc = read_config(args.config)
    merged = dict(doc)
    flags = set()
    for name in RunConfig.__struct_fields__:
        value = getattr(args, name, None)
        if name not in _NOT_FLAGS and value is not None:
            merged[name] = value
            flags.add(name)
    merged["params"] = {**doc.get("params", {}), **parse_params(args.param)}
    cfg = convert(merged, args.config or "the command line", InvalidArgument, frozenset(flags))
    for name in ("input", "restart", "key_file", "profile"):
        path = getattr(cfg, name)
        if path and not os.path.exists(path):
            raise InvalidArgument(f"{_flag(name)} {path}: no such file or folder. Fix: check "
                                  "the path")
    from hpccloud.io.atomic import check_writable

    for name in ("json", "audit", "trace"):
        value = getattr(cfg, name)
        if value and not (name == "trace" and value.endswith(".otf2")):  # .otf2: a folder
            check_writable(value)
    cfg.validate()
    return cfg


__all__ = ["RunConfig", "add_arguments", "balancer_names", "config_from_args",
           "config_from_mapping", "parse_params", "read_config"]
