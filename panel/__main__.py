"""`python -m panel …` is the same as `helios …`."""

from panel.cli import main

main()
