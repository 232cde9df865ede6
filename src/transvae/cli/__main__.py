"""``python -m transvae.cli`` (e.g. under ``torchrun -m transvae.cli train ...``)."""

import sys

from . import main

sys.exit(main())
