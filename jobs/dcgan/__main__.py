from jobs.dcgan.cli import main

raise SystemExit(main())
