"""Put the MONAI Label app folder on sys.path, as the server does, so tests import ``lib.synthesis``."""

import sys
from pathlib import Path

APP_DIR = Path(__file__).resolve().parents[2] / "MonaiLabelApp"
if str(APP_DIR) not in sys.path:
    sys.path.insert(0, str(APP_DIR))
