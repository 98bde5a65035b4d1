"""Policy: residency decisions from the topology's data classes (no MPI)."""

import numpy as np
import pytest

from hpccloud.errors import ConfigError, InvalidArgument, ResidencyError
from hpccloud.policy import Policy
from hpccloud.shards import block_1d
from hpccloud.topology import topology_from_text

TOPO = """
name = "three"
[[regions]]
name = "eu-north"
jurisdiction = "EU"
price_per_core_hour = 1
ranks = [0, 1]
[[regions]]
name = "eu-south"
jurisdiction = "EU"
price_per_core_hour = 1
ranks = [2]
[[regions]]
name = "us-east"
jurisdiction = "US"
price_per_core_hour = 1
ranks = [3]
[data_classes.public]
regions = ["*"]
aggregates_may_leave = true
[data_classes.eu-personal]
jurisdictions = ["EU"]
aggregates_may_leave = true
[data_classes.north-only]
regions = ["eu-north"]
"""


@pytest.fixture
def policy():
    return Policy.from_topology(topology_from_text(TOPO, "three.toml", 4))


def test_regions_and_ranks(policy):
    assert policy.allowed_regions("eu-personal") == {"eu-north", "eu-south"}
    assert policy.allowed_ranks("eu-personal") == {0, 1, 2}
    assert policy.allowed_ranks("north-only") == {0, 1}
    assert policy.allowed_ranks("public") == {0, 1, 2, 3}
    assert policy.may_live("eu-personal", "eu-south") and not policy.may_live("eu-personal", "us-east")
    assert policy.aggregates_may_leave("eu-personal") and not policy.aggregates_may_leave("north-only")


def test_unknown_class_names_file_and_fix(policy):
    with pytest.raises(ConfigError, match=r"three.toml.*'secret'.*\[data_classes.secret\]"):
        policy.allowed_regions("secret")


def test_allowed_mask(policy):
    mask = policy.allowed_mask(["public", "eu-personal", "north-only"])
    assert mask.tolist() == [[True, True, True, True], [True, True, True, False],
                             [True, True, False, False]]


def test_check_owners(policy):
    m = block_1d(40, 4, "<f8", size=4, data_class=["public", "eu-personal", "north-only", "public"])
    policy.check_owners(m, np.array([3, 2, 1, 0]))  # allowed
    with pytest.raises(ResidencyError, match=r"shard 1 of data class 'eu-personal'.*'us-east' \(rank 3\)"):
        policy.check_owners(m, np.array([0, 3, 1, 0]))
    with pytest.raises(ResidencyError, match="shard 2 of data class 'north-only'"):
        policy.check_owners(m, np.array([0, 0, 2, 0]))
    with pytest.raises(InvalidArgument, match="rank 7"):
        policy.check_owners(m, np.array([0, 0, 7, 0]))
    with pytest.raises(InvalidArgument, match="shape"):
        policy.check_owners(m, np.array([0, 0]))


def test_check_owners_cache_never_skips_a_check(policy):
    """A passing (owners, classes) pair is remembered; other owners or classes are checked again."""
    m = block_1d(40, 4, "<f8", size=4, data_class=["public", "eu-personal", "north-only", "public"])
    ok = np.array([3, 2, 1, 0])
    policy.check_owners(m, ok)
    policy.check_owners(m, ok)  # from the cache
    assert len(policy._passed) == 1
    # the same owners with other data classes: checked again, and caught
    with pytest.raises(ResidencyError, match="shard 0 of data class 'north-only'"):
        policy.check_owners(m.with_classes(["north-only", "eu-personal", "north-only", "public"]), ok)
    # other owners on the same map: checked again
    with pytest.raises(ResidencyError, match="shard 1"):
        policy.check_owners(m, np.array([3, 3, 1, 0]))
    # the same values in another dtype hit the same entry; a failure is never remembered
    policy.check_owners(m.with_owners(ok), ok.astype(np.uint8))
    assert len(policy._passed) == 1
    with pytest.raises(ResidencyError):
        policy.check_owners(m, np.array([3, 3, 1, 0]))
    with pytest.raises(InvalidArgument, match="rank -1"):
        policy.check_owners(m, np.array([-1, 2, 1, 0]))
    wrapped = np.array([2**64 - 1, 2, 1, 0], np.uint64)  # -1 as int64 bytes: must not alias
    with pytest.raises(InvalidArgument, match="does not exist"):
        policy.check_owners(m, wrapped)


def test_check_owners_on_large_maps_is_checked_every_time(policy):
    from hpccloud.policy import CHECK_CACHE_MAX_SHARDS

    n = CHECK_CACHE_MAX_SHARDS + 1
    classes = ["public"] * (n - 1) + ["north-only"]
    m = block_1d(n, n, "<f8", size=4, data_class=classes)
    owners = np.zeros(n, np.int64)
    policy.check_owners(m, owners)
    assert not policy._passed
    owners[-1] = 2
    with pytest.raises(ResidencyError, match=f"shard {n - 1} of data class 'north-only'"):
        policy.check_owners(m, owners)
    with pytest.raises(ConfigError, match="'secret'"):
        policy.check_owners(m.with_classes(["secret"] * n), np.zeros(n, np.int64))
