"""``python -m filterviz``: the same as the ``filterviz`` command."""

import sys

from filterviz.cli import main

sys.exit(main())
