"""`python -m edgekit.cli`: the same command as `edgekit`."""

from edgekit.cli import main

main()
