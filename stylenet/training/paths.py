"""Where the package's configs are, and the example data that tests, benchmarks and the default
configs use: the one place that knows the layout around a checkout."""

import os
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]
CONFIG_DIR = PACKAGE_DIR / "configs"
DATA_DIR_ENV = "STYLENET_DATA_DIR"


def shared_data_dir() -> Path:
    """$STYLENET_DATA_DIR, else `shared/data` beside the checkout (photos/, styles/, content/)."""
    return Path(os.environ.get(DATA_DIR_ENV) or PACKAGE_DIR.parents[1] / "shared" / "data")
