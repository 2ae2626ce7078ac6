"""``python -m siaga.cli``: the ``siaga`` command."""

import sys

from siaga.cli import main

sys.exit(main())
