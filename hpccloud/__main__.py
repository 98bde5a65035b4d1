"""``python -m hpccloud`` is the same as the ``hpccloud`` console script."""

from hpccloud.cli import main

raise SystemExit(main())
