"""``python -m fedsim``: the same command line as ``fedsim``."""

import sys

from fedsim.cli import main

sys.exit(main())
