from octollm.cli.main import main

main()
