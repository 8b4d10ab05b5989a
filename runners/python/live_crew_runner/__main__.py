from live_crew_runner.serve import main

raise SystemExit(main())
