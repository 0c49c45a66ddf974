"""``python -m mailgem.runner.cli``: the ``mailgem`` command."""

import sys

from mailgem.runner.cli import main

sys.exit(main())
