"""``python -m daemon.cli``: the same program as ``mpwatch``."""

import sys

from daemon.cli import main

sys.exit(main())
