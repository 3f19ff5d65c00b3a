"""``python -m attnrepro.gpu_check``: the GPU check's command line."""
import sys

from . import main

sys.exit(main())
