from v6gen.cli import main

main()
