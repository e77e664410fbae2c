from fvcli.cli import main

main()
