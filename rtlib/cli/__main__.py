"""``python -m rtlib.cli``: the ``rtlib`` command."""

from rtlib.cli import main

main()
