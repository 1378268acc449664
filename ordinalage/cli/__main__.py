"""Allows `python -m ordinalage.cli ...` (same as `python -m ordinalage ...`)."""

from ordinalage.cli import main

raise SystemExit(main())
