"""hpccloud: sharded numeric work across regional clusters.

MPI ranks stand for regional clusters; a topology file says which rank is in
which region, what it costs and which data classes may live there. Kernels run
shards, and a load balancer moves shards by *measured* link and compute rates,
never across a residency border.
"""

from hpccloud.errors import (
    ChecksumError,
    ConfigError,
    HpccloudError,
    InvalidArgument,
    PeerFailed,
    ResidencyError,
    TopologyError,
)

__version__ = "0.1.0"

__all__ = [
    "ChecksumError",
    "ConfigError",
    "HpccloudError",
    "InvalidArgument",
    "PeerFailed",
    "ResidencyError",
    "TopologyError",
    "__version__",
]
