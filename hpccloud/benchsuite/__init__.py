"""Benchmark targets of ``hpccloud bench``: each module has ``add_arguments(parser)`` and ``run(args)``."""
