"""``python -m jsflow.cli``: the ``jsflow`` command."""

import sys

from jsflow.cli import main

sys.exit(main())
