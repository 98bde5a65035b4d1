"""Fuzzed topology files, HDF5 inputs and run configs: every one a clean refusal or a valid acceptance.

A fixed sample per run (seeded); ``python tests/fuzz/fuzzlib.py --cases 3000`` runs more.
"""

import random

import pytest
from fuzzlib import config_case, hdf5_case, topology_case

CASES = 100


@pytest.mark.parametrize("kind,case", [("topology", topology_case), ("hdf5", hdf5_case),
                                       ("config", config_case)])
def test_fuzz_no_traceback_no_wrong_acceptance(tmp_path, kind, case):
    rng = random.Random(20261203)
    bad = []
    seen = set()
    for _ in range(CASES):
        verdict, detail = case(rng, str(tmp_path))
        seen.add(verdict)
        if verdict in ("traceback", "accepted wrong"):
            bad.append(f"{verdict}: {detail}")
    assert not bad, "\n".join(bad[:5])
    assert seen == {"clean refusal", "accepted valid"}  # the sample reaches both sides
