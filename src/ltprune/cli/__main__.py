"""``python -m ltprune.cli``: the same as the ``ltprune`` command."""

import sys

from . import main

sys.exit(main())
