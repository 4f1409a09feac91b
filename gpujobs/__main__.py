from gpujobs.cli.entry import main

main()
