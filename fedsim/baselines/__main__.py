"""``python -m fedsim.baselines``: centralised baselines of a scenario (docs/baselines.md)."""

import sys

from fedsim.baselines.cli import main

sys.exit(main())
