"""``python -m battery_worker.cli``: the same as the ``battery-worker`` command."""

import sys

from battery_worker.cli.main import main

sys.exit(main())
