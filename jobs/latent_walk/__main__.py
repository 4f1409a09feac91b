from jobs.latent_walk.cli import main

raise SystemExit(main())
