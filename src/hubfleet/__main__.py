"""`python -m hubfleet` runs the command line."""

from hubfleet.cli import main

main()
