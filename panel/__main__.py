"""`python -m panel …` is the same as `helios …`."""

from panel.cli.commands import main

main()
