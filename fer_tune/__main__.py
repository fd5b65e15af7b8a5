"""`python -m fer_tune ...` runs the `fer-tune` command, as `python -m fer_tune.cli` does."""

import sys

from fer_tune.cli.main import main

sys.exit(main())
