"""Allows `python -m ordinalage ...` and `torchrun -m ordinalage train ...`."""

from ordinalage.cli import main

raise SystemExit(main())
