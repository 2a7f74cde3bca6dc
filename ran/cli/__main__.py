"""``python -m ran.cli``: the ``ran`` command."""

import sys

from ran.cli import main

sys.exit(main())
