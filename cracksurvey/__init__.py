"""cracksurvey: crack layers from façade images (TernausNet + TOPO loss, Dask engine)."""

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())
