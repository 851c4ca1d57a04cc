"""``python -m rac_losses.demo``: the same as the ``rac-demo`` command."""

from rac_losses.demo.cli import main

raise SystemExit(main())
