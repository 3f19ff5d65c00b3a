"""`python -m attnrepro ...` (and `torchrun -m attnrepro train ...`) is the CLI."""
import sys

from .cli import main

sys.exit(main())
