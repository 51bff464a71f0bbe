"""diarize: who spoke when, offline, with a siamese KL speaker encoder.

    import diarize
    result = diarize.diarize("meeting.wav")          # bundled model, CPU or CUDA
    diarize.write_turns(result.turns, "meeting.rttm", file_id=result.file_id)
"""
import importlib

__all__ = ["load_model", "diarize", "Diarization", "PipelineConfig", "Turn", "write_turns", "AudioError",
           "ModelError"]
__version__ = "0.1.0"
_MODULE_OF = {"load_model": "model", "diarize": "pipeline", "Diarization": "pipeline",
              "PipelineConfig": "pipeline", "Turn": "writers", "write_turns": "writers", "AudioError": "audio",
              "ModelError": "model"}


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str):
    # the API loads on first use, not on `import diarize`: torch takes seconds to import, which `diarize
    # --help` need not wait for, and a Ctrl-C during it would end in a traceback before the CLI runs
    if name in _MODULE_OF:
        return getattr(importlib.import_module(f".{_MODULE_OF[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
