"""``python -m shopsearch.cli``: the same as the ``shopsearch`` command."""

from shopsearch.cli import main

main()
