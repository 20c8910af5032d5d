"""``python -m tlsleak.cli``: the same as the ``tlsleak`` command."""

import sys

from tlsleak.cli import main

sys.exit(main())
