"""`python -m fer_tune.cli ...` runs the `fer-tune` command."""

import sys

from fer_tune.cli.main import main

sys.exit(main())
