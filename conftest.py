# Root conftest: registers the MPI test plugin for tests/ and benchmarks/.
pytest_plugins = ["hpccloud.testing.mpi_pytest"]
