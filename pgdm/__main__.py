"""``python -m pgdm`` and ``torchrun -m pgdm``: the ``pgdm`` command."""
import sys

from .entrypoints.cli import main

sys.exit(main())
