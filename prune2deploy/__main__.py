from prune2deploy.cli.app import main

raise SystemExit(main())
