"""Optional dependencies: one clear "install hpccloud[extra]" message, never a traceback.

``require("cryptography", "--key-file")`` raises :class:`MissingExtra` (exit
code 2) naming the feature, the package and the extra to install, when the
package is missing. Call it where the feature is chosen — before MPI starts
or on every rank alike — so every rank fails the same way and the message is
printed once. :func:`from_import_error` turns a stray ``ModuleNotFoundError``
of an optional package into the same message (the CLI's last resort).
"""

from __future__ import annotations

import importlib.util

from hpccloud.errors import MissingExtra as _MissingExtraBase

#: importable name -> (extra that installs it, distribution name)
OPTIONAL = {
    "cryptography": ("crypto", "cryptography"),
    "matplotlib": ("plot", "matplotlib"),
    "pytest": ("test", "pytest"),
    "hypothesis": ("test", "hypothesis"),
}


class MissingExtra(_MissingExtraBase):
    """An optional dependency of a chosen feature is not installed."""

    collective = True  # the same on every rank of one installation

    def __init__(self, module: str, feature: str) -> None:
        extra, dist = OPTIONAL.get(module, (None, module))
        fix = (f"pip install 'hpccloud[{extra}]'" if extra else f"pip install {dist}")
        super().__init__(f"{feature} needs the Python package '{dist}', which is not installed "
                         f"in this environment. Fix: {fix}")
        self.module, self.extra = module, extra


def available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def require(module: str, feature: str) -> None:
    """Raise :class:`MissingExtra` if ``module`` cannot be imported.

    >>> require("json", "anything")
    >>> try:
    ...     require("no_such_module_xyz", "--frobnicate")
    ... except MissingExtra as exc:
    ...     print(str(exc)[:62])
    --frobnicate needs the Python package 'no_such_module_xyz', wh
    """
    if not available(module):
        raise MissingExtra(module, feature)


def from_import_error(exc: ModuleNotFoundError, feature: str) -> MissingExtra | None:
    """The :class:`MissingExtra` for an optional package's import error, else None."""
    top = (exc.name or "").split(".")[0]
    if top not in OPTIONAL:
        return None
    err = MissingExtra(top, feature)
    err.collective = False  # raised where it happened: maybe on one rank only
    return err
