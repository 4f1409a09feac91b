from gpujobs.cli import main

main()
