from live_crew_runner.serve import main

main()
