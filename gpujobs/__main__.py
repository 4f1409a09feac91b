from gpujobs.cli.app import main

main()
