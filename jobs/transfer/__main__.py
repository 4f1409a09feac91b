from jobs.transfer.cli import main

raise SystemExit(main())
