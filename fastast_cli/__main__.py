"""`python -m fastast_cli` runs the `fastast` command."""

from fastast_cli.cli import main

main()
