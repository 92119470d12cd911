"""`python -m raven_service` runs the `raven` CLI."""

from raven_service.cli import main

raise SystemExit(main())
