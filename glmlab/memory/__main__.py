"""``python -m glmlab.memory``: the command line of :mod:`glmlab.memory.cli`."""

from glmlab.memory.cli import main

raise SystemExit(main())
