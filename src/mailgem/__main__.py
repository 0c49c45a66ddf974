"""``python -m mailgem``: the ``mailgem`` command."""

from mailgem.runner.cli import main

raise SystemExit(main())
