"""``python -m escalator``."""

import sys

from escalator.cli import main

sys.exit(main())
