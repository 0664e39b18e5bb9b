"""`python -m biosyn ...`: the `biosyn` command without its console script."""

import sys

from .interfaces.cli import main

sys.exit(main())
