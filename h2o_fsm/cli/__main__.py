"""``python -m h2o_fsm.cli``: the same as the ``h2o-fsm`` command."""

from __future__ import annotations

import sys

from . import main

sys.exit(main())
