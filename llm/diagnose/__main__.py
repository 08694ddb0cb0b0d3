"""``python -m llm.diagnose``: the command line (``llm.diagnose.cli.main``)."""

import sys

from llm.diagnose.cli import main

if __name__ == "__main__":
    sys.exit(main())
