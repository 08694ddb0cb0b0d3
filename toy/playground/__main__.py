"""``python -m toy.playground``: serve the bandit playground (see ``toy.playground.main``)."""

import sys

from toy.playground import main

sys.exit(main())
