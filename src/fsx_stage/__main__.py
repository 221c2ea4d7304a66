"""``python -m fsx_stage`` runs the command-line interface."""

from fsx_stage.cli import main

raise SystemExit(main())
