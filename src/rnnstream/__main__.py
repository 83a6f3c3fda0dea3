"""``python -m rnnstream``: the command line."""

import sys

from rnnstream.cli import main

sys.exit(main())
