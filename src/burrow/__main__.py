"""``python -m burrow`` runs the CLI."""

from burrow.cli.main import main

raise SystemExit(main())
