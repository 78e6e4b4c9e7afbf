"""``python -m napari_clipseg.cli``."""

import sys

from .main import main

sys.exit(main())
