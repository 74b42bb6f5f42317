from ioi.cli import main

raise SystemExit(main())
