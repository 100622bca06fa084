"""One exit-status convention for every command-line tool of the pack.

=====  =====================================================================================
0      done
1      error: bad options, data or model files; the ``error: …`` line on stderr says what to change
2      usage error (unknown flag, missing argument): argparse's own status, with its usage text
3      stopped as asked (``train_lora.py --stop-after-step``); resume with ``--resume``
4      training diverged (a NaN/inf loss); the last good checkpoint is kept
130    interrupted (Ctrl-C, 128 + SIGINT as shells report it); what was finished is kept
=====  =====================================================================================
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from .errors import FaithfulFacesError

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_STOPPED = 3
EXIT_DIVERGED = 4
EXIT_INTERRUPTED = 130


def run_command(body: Callable[[], int], *, interrupted: str) -> int:
    """``body()``'s status; a ``FaithfulFacesError`` → its message on stderr and ``EXIT_ERROR``.

    Ctrl-C prints ``interrupted`` (what was kept and how to go on) and returns ``EXIT_INTERRUPTED``
    instead of a traceback. Other exceptions are bugs and propagate.
    """
    try:
        return body()
    except FaithfulFacesError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_INTERRUPTED
