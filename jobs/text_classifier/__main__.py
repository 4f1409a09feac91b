from jobs.text_classifier.cli import main

raise SystemExit(main())
