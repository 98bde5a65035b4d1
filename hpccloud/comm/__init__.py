"""Everything that talks MPI: error agreement, shard transport, halo exchange."""
