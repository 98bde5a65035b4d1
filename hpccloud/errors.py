"""One exception hierarchy for hpccloud, rooted in :class:`HpccloudError`.

Every error carries ``exit_code``: the CLI exits with it after printing the
message once (rank 0), so a batch script can tell bad input (2) from a runtime
failure (1).
"""

from __future__ import annotations


class HpccloudError(Exception):
    """Base class of every error hpccloud raises on purpose."""

    exit_code = 1
    #: set True on an error raised on every rank (the CLI prints it once); often unset
    collective: bool


class ConfigError(HpccloudError, ValueError):
    """Bad input: a file, key, argument or value that the user must fix."""

    exit_code = 2


class TopologyError(ConfigError):
    """A topology file (or the rank/host layout it is applied to) is invalid."""


class InvalidArgument(ConfigError):
    """A function or command-line argument has a wrong value, type or shape."""


class MissingExtra(ConfigError):
    """An optional dependency of a chosen feature is not installed (see hpccloud.extras)."""


class ResidencyError(HpccloudError):
    """A shard would be placed in a region where its data class may not live."""


class ChecksumError(HpccloudError):
    """A payload or file failed checksum verification; it was not accepted."""


class PeerFailed(HpccloudError):
    """Another rank failed; this rank stops too instead of waiting forever."""


ERRORS_BY_NAME = {
    cls.__name__: cls
    for cls in (
        HpccloudError,
        ConfigError,
        TopologyError,
        InvalidArgument,
        MissingExtra,
        ResidencyError,
        ChecksumError,
        PeerFailed,
    )
}
