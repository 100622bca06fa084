"""``python -m faithfulfaces_core.eval REF VIDEO...`` (see ``cli``)."""

import sys

from .cli import main

sys.exit(main())
