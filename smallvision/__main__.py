"""`python -m smallvision` runs the command-line tool."""

from smallvision.cli import main

main()
