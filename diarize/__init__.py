"""diarize: who spoke when, offline, with a siamese KL speaker encoder.

    import diarize
    result = diarize.diarize("meeting.wav")          # bundled model, CPU or CUDA
    diarize.write_turns(result.turns, "meeting.rttm")
"""
from .model import load_model
from .pipeline import Diarization, PipelineConfig, diarize
from .writers import Turn, write_turns

__all__ = ["load_model", "diarize", "Diarization", "PipelineConfig", "Turn", "write_turns"]
__version__ = "0.1.0"
