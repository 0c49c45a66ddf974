"""``python -m mailgem``: the ``mailgem`` command."""

from mailgem.gems.cli import main

raise SystemExit(main())
