"""The speaker encoder (BLSTM -> BLSTM -> dense -> softmax), its siamese KL comparison, and checkpoints."""
from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .calibration import Calibration
from .hparams import N_MELS, WINDOW_FRAMES
from .writers import atomic_write

FORMAT_VERSION = 1
MODELS_DIR = Path(__file__).resolve().parent.parent / "models"
DEFAULT_MODEL = "diarize-blstm"


class ModelError(ValueError):
    """A model file that cannot be used; the message names the file and what is wrong."""


@dataclass(frozen=True)
class EncoderConfig:
    n_mels: int = N_MELS  # input features per frame
    window_frames: int = WINDOW_FRAMES  # frames per input window (40 = 0.4 s)
    lstm_hidden: int = 128  # units per direction in each BLSTM layer
    dropout: float = 0.2  # between and after the BLSTM layers
    dense: tuple[int, ...] = (256,)  # hidden dense layers (PReLU)
    n_outputs: int = 256  # K: softmax outputs the KL compares
    embedding_layer: str = "blstm2"  # "blstm2" (time-averaged 2nd BLSTM output) or "dense" (last hidden dense)

    @property
    def embedding_dim(self) -> int:
        return 2 * self.lstm_hidden if self.embedding_layer == "blstm2" else self.dense[-1]


class SpeakerEncoder(nn.Module):
    """Base network of the siamese pair: one (time, mel) window in, a distribution over K outputs out."""

    def __init__(self, config: EncoderConfig = EncoderConfig()):
        super().__init__()
        if config.embedding_layer not in ("blstm2", "dense"):
            raise ValueError(f"embedding_layer must be 'blstm2' or 'dense', not {config.embedding_layer!r}")
        self.config = config
        self.calibration: Calibration | None = None  # set when loaded from a calibrated checkpoint
        h = config.lstm_hidden
        self.blstm1 = nn.LSTM(config.n_mels, h, batch_first=True, bidirectional=True)
        self.blstm2 = nn.LSTM(2 * h, h, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(config.dropout)
        layers, width = [], 2 * h
        for size in config.dense:
            layers += [nn.Linear(width, size), nn.PReLU(size)]
            width = size
        self.dense = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, config.n_outputs)

    @staticmethod
    def normalise(x: torch.Tensor) -> torch.Tensor:
        """Remove each window's overall level (gain) and scale; the spectral shape, which carries the
        speaker, is left as it is."""
        mean = x.mean(dim=(1, 2), keepdim=True)
        # a constant window (digital silence) has std 0 and x - mean at rounding level, which a tiny
        # divisor would blow up differently on each device: CUDA and CPU embeddings then differed (cosine 0.23)
        std = x.std(dim=(1, 2), keepdim=True).clamp_min(1e-3)
        return (x - mean) / (std + 1e-5)

    def hidden(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch, time, mel) -> (time-averaged 2nd BLSTM output, last hidden dense output)."""
        x, _ = self.blstm1(self.normalise(x))
        x, _ = self.blstm2(self.dropout(x))
        pooled = x.mean(dim=1)
        return pooled, self.dense(self.dropout(pooled))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Log-probabilities over the K outputs (log-softmax: the KL needs logs anyway)."""
        return self.forward_and_embed(x)[0]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """L2-normalised embedding from the inner layer chosen in the config (never the softmax)."""
        return self._embedding(*self.hidden(x))

    def forward_and_embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities and embeddings of one pass (training with a term on the embeddings too)."""
        pooled, dense = self.hidden(x)
        return torch.log_softmax(self.classifier(dense), dim=-1), self._embedding(pooled, dense)

    def _embedding(self, pooled: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(pooled if self.config.embedding_layer == "blstm2" else dense, dim=-1)


def symmetric_kl(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(p||q) + KL(q||p) row by row, from log-probabilities."""
    p, q = log_p.exp(), log_q.exp()
    return ((p - q) * (log_p - log_q)).sum(dim=-1)


class SiameseKL(nn.Module):
    """Two inputs through the same encoder weights, compared by the symmetric KL divergence."""

    def __init__(self, encoder: SpeakerEncoder):
        super().__init__()
        self.encoder = encoder

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return symmetric_kl(self.encoder(a), self.encoder(b))


def save_checkpoint(path: str | Path, encoder: SpeakerEncoder, **extra) -> None:
    """Write {format_version, config, state_dict, **extra} atomically (temporary file, then rename)."""
    state = {k: v.detach().cpu() for k, v in encoder.state_dict().items()}
    write_checkpoint(path, {"format_version": FORMAT_VERSION, "config": dataclasses.asdict(encoder.config),
                            "state_dict": state, **extra})


def write_checkpoint(path: str | Path, payload: dict) -> None:
    """Write a checkpoint's dict atomically (temporary file, then rename)."""
    with atomic_write(path, "wb") as f:
        torch.save(payload, f)


def available_models() -> list[str]:
    return sorted(p.stem for p in MODELS_DIR.glob("*.pt"))


def resolve_model_path(name_or_path: str | Path | None) -> Path:
    """A registry name (a file in models/) or a path; None means the bundled default."""
    name = str(name_or_path or DEFAULT_MODEL)
    path = Path(name)
    if path.suffix == ".pt" or path.exists() or os.sep in name:
        if not path.exists():
            raise ModelError(f"{path}: no such model file")
        if path.is_dir():
            raise ModelError(f"{path}: is a folder, not a model file")
        return path
    if (MODELS_DIR / f"{name}.pt").exists():
        return MODELS_DIR / f"{name}.pt"
    raise ModelError(f"unknown model {name!r}; available: {', '.join(available_models()) or 'none'}")


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint as data: weights_only=True never runs pickled code."""
    path = Path(path)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ModelError(f"{path}: no such model file") from None
    except Exception as e:
        text = str(e)
        if "Unsupported global" in text:  # torch's safe unpickler met a class: a pickled object, not weights
            raise ModelError(f"{path}: refused, the file holds pickled objects other than weights") from None
        detail = (text.split("WeightsUnpickler error:")[-1].strip() or type(e).__name__).splitlines()[0]
        if (isinstance(e, (IndexError, KeyError, EOFError)) or not any(c.isalpha() for c in detail)
                or "Unsupported operand" in detail):
            # "pop from empty list", a bare pickle opcode ("105"): the unpickler choking on other data
            detail = "not a PyTorch file"
        elif "zip archive" in detail:  # torch's reader finds no end to the archive
            detail = "truncated or damaged"
        raise ModelError(f"{path}: not a diarize model ({_shortened(detail)})") from None
    if not isinstance(ckpt, dict) or "format_version" not in ckpt or "state_dict" not in ckpt:
        raise ModelError(f"{path}: not a diarize model (no format_version/state_dict)")
    if ckpt["format_version"] != FORMAT_VERSION:
        raise ModelError(f"{path}: model format version {ckpt['format_version']}, this diarize reads "
                         f"version {FORMAT_VERSION}")
    return ckpt


def _shortened(text: str, limit: int = 120) -> str:
    """At most `limit` characters, cut between words."""
    return text if len(text) <= limit else text[:limit].rsplit(" ", 1)[0] + " ..."


def encoder_from_checkpoint(ckpt: dict, path: str | Path = "model") -> SpeakerEncoder:
    if ckpt.get("kind") == "overlap":
        raise ModelError(f"{path}: an overlap detector (cluster takes it as --overlap-model), not a speaker encoder")
    try:
        cfg = dict(ckpt["config"])
        cfg["dense"] = tuple(cfg.get("dense", ()))
        encoder = SpeakerEncoder(EncoderConfig(**cfg))
        encoder.load_state_dict(ckpt["state_dict"])
    except (TypeError, KeyError, RuntimeError, ValueError) as e:
        raise ModelError(f"{path}: config and weights do not match ({_shortened(str(e).splitlines()[0])})") from None
    return encoder


def device_name(device: str) -> str:
    """A device named in any case -> its lower-case name; ValueError unless auto, cpu or cuda (:N)."""
    name = device.lower()
    if not re.fullmatch(r"auto|(cpu|cuda)(:\d+)?", name):  # torch knows mps, xpu...: this build runs CPU and CUDA
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    return name


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    """'auto'/None: CUDA when there is one, else CPU; 'cpu', 'cuda', 'cuda:N' as asked."""
    device = device_name(device) if isinstance(device, str) else device
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but this torch sees no CUDA GPU")
    return dev


def load_model(name_or_path: str | Path | None = None, device: str | None = "auto") -> SpeakerEncoder:
    """Load an encoder for inference (eval mode) from a registry name or a path."""
    path = resolve_model_path(name_or_path)
    return model_from_checkpoint(load_checkpoint(path), path).to(pick_device(device)).eval()


def model_from_checkpoint(ckpt: dict, path: Path) -> SpeakerEncoder:
    """An encoder with what its file says of it: figures, speaker-count calibration and source."""
    encoder = encoder_from_checkpoint(ckpt, path)
    metrics = ckpt.get("metrics")  # figures measured at training time, shown by `diarize info`
    encoder.metrics = metrics if isinstance(metrics, dict) else {}
    calibration = ckpt.get("calibration")  # the speaker-count thresholds measured for this encoder
    encoder.calibration = Calibration.from_dict(calibration) if isinstance(calibration, dict) else None
    encoder.source = path
    return encoder
