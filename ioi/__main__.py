"""`python -m ioi`: the same command line as `ioi`."""

from ioi.cli import main

raise SystemExit(main())
