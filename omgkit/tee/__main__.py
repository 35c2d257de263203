"""`python -m omgkit.tee --device DIR`: run a device's TEE daemon."""

import sys

from .daemon import main

sys.exit(main())
