"""Test support shipped with the package: the MPI pytest plugin and launch helpers."""
