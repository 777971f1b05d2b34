"""`python -m worker.cli`, the same as `sandbox-worker`."""

import sys

from worker.cli.main import main

sys.exit(main())
