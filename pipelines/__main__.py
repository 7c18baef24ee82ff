"""``python -m pipelines``: the Nightfeed command line."""

import sys

from pipelines.cli import main

sys.exit(main())
