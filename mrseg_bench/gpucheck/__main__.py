"""``python -m mrseg_bench.gpucheck [--out DIR] [--dry-run] [--budget-s S]``."""

import sys

from .driver import main

sys.exit(main())
