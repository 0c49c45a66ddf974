"""``python -m mailgem.gems.cli``: the ``mailgem`` command."""

import sys

from mailgem.gems.cli import main

sys.exit(main())
