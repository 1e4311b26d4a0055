"""The ``rtlib`` command: ``serve``, ``token``, ``simulate``, ``tune``, ``plan``, ``schema`` and ``demo``.

:mod:`~rtlib.cli.parser` builds the arguments, :mod:`~rtlib.cli.commands` runs them, and
:mod:`~rtlib.cli.errors` turns a mistake into one line and exit status 2.
"""

from rtlib.cli.commands import main
from rtlib.cli.errors import UsageError
from rtlib.cli.parser import build_parser

__all__ = ["UsageError", "build_parser", "main"]
