"""``python -m supervisor.cli``: the ``desk-supervisor`` command."""

from supervisor.cli.main import main

raise SystemExit(main())
