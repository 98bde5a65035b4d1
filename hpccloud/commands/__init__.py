"""One module per ``hpccloud`` command: ``add_parser(sub)`` and ``run(args) -> int``."""
