"""``python -m rac_losses.integrations.openrlhf ARGS``: the same as ``rac-openrlhf ARGS``."""

from rac_losses.integrations.openrlhf.launcher import main

raise SystemExit(main())
