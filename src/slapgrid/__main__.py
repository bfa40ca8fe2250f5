from slapgrid.cli.main import main

main()
