"""diarize: who spoke when, offline, with a siamese KL speaker encoder."""
from .model import load_model

__all__ = ["load_model"]
__version__ = "0.1.0"
