"""``python -m mmdpo``: the ``mmdpo`` command."""

import sys

from mmdpo.cli import main

if __name__ == "__main__":
    sys.exit(main())
