"""The one training loop (``loop.train``), its settings, and the corpora it trains on (``data``)."""

from .loop import StartingWeights, TrainCost, TrainResult, prepare_model, train  # noqa: F401
from .settings import TrainSettings, parse_layers  # noqa: F401
