"""``python -m neuron_runtime`` is the same as the ``neuron-runtime`` console script."""

import sys

from neuron_runtime.cli import main

sys.exit(main())
