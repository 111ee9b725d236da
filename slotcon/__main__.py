"""``python -m slotcon <command>``: the same as the ``slotcon`` console script."""

import sys

from slotcon.cli import main

sys.exit(main())
