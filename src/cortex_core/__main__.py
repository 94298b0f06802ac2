from cortex_core.cli import main

raise SystemExit(main())
