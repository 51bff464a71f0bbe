"""A pretrained open encoder as a teacher: what it knows of voices the corpus lacks, passed on by matching
the similarities between the windows of a batch.

The teacher is Resemblyzer's GE2E speaker encoder (3 LSTM layers of 256, trained on ~8,000 speakers;
Apache-2.0): its weights ship in its wheel (`pip install resemblyzer`), and only that file is read here, so
the package itself (and its VAD) need not import. Relational distillation (Park et al., 2019) asks the
student's cosine similarities between the windows of a batch to match the teacher's: it needs no
projection between the two embedding spaces and leaves the KL pairwise loss to shape the student's.
"""
from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import torch
from torch import nn

from .hparams import HOP_LENGTH, N_FFT, SAMPLE_RATE

TEACHER_MELS = 40  # the teacher's front end: 40 mel bands of power, 25 ms windows, 10 ms hop
TEACHER_SAMPLES = 25600  # 1.6 s: the teacher's own partial-utterance length
TARGET_DBFS = -30.0  # the level the teacher's training audio was normalised to


def resemblyzer_weights() -> Path:
    """The path of the weights in the installed resemblyzer wheel; a clear error when it is not installed."""
    spec = importlib.util.find_spec("resemblyzer")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt" if spec else None
    if path is None or not path.exists():
        raise ValueError("distillation needs the teacher's weights: pip install -e '.[distill]' "
                         "(or pip install resemblyzer)")
    return path


class Teacher(nn.Module):
    """Resemblyzer's encoder: 40 mel power bands -> 3-layer LSTM -> last hidden state -> dense, ReLU,
    L2-normalised 256-d embedding."""

    def __init__(self, weights: Path):
        super().__init__()
        self.lstm = nn.LSTM(TEACHER_MELS, 256, num_layers=3, batch_first=True)
        self.linear = nn.Linear(256, 256)
        state = torch.load(weights, map_location="cpu", weights_only=True)["model_state"]
        self.load_state_dict({k: v for k, v in state.items() if not k.startswith("similarity")})
        self.eval().requires_grad_(False)

    @functools.cached_property
    def _mel_basis(self) -> torch.Tensor:
        import librosa

        return torch.from_numpy(librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=TEACHER_MELS))

    @torch.no_grad()
    def forward(self, waves: torch.Tensor) -> torch.Tensor:
        """(N, samples) 16 kHz waves -> (N, 256) embeddings; each wave is first brought to -30 dBFS."""
        rms = waves.square().mean(dim=1, keepdim=True).sqrt().clamp_min(1e-5)
        waves = waves * (10 ** (TARGET_DBFS / 20) / rms)
        spec = torch.stft(waves, N_FFT, HOP_LENGTH, window=torch.hann_window(N_FFT), return_complex=True)
        mel = torch.matmul(self._mel_basis, spec.abs().square()).transpose(1, 2)  # (N, frames, 40)
        _, (hidden, _) = self.lstm(mel)
        return nn.functional.normalize(torch.relu(self.linear(hidden[-1])), dim=-1)


def relational_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Mean squared difference between the two cosine-similarity matrices of a batch, off the diagonal."""
    s, t = student @ student.T, teacher @ teacher.T
    off = ~torch.eye(len(s), dtype=torch.bool, device=s.device)
    return (s - t)[off].square().mean()
