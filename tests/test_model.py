"""What the speaker encoder promises: a distribution over K outputs for each (time, mel) window, unit
embeddings from an inner layer, indifference to the recording level, and checkpoints that describe
themselves and load back to the same network."""
import pytest
import torch

from diarize.hparams import N_MELS, WINDOW_FRAMES
from diarize.model import (FORMAT_VERSION, EncoderConfig, ModelError, SpeakerEncoder, load_model,
                           save_checkpoint)

TINY = EncoderConfig(lstm_hidden=16, dense=(12,), n_outputs=8)


def encoder(config: EncoderConfig = TINY) -> SpeakerEncoder:
    torch.manual_seed(0)
    return SpeakerEncoder(config).eval()


def windows(n: int = 4, frames: int = WINDOW_FRAMES, seed: int = 1) -> torch.Tensor:
    """Log-mel-like (n, time, mel) windows: levels around -5 with a spectral slope and some texture."""
    g = torch.Generator().manual_seed(seed)
    return -5 + torch.linspace(2, -2, N_MELS) + torch.randn(n, frames, N_MELS, generator=g)


def test_forward_gives_log_probabilities_over_the_k_outputs():
    with torch.no_grad():
        log_p = encoder()(windows(5))
    assert log_p.shape == (5, TINY.n_outputs)
    assert (log_p <= 0).all()
    assert torch.allclose(log_p.exp().sum(dim=1), torch.ones(5), atol=1e-6)


@pytest.mark.parametrize("layer, dim", [("blstm2", 2 * 16), ("dense", 12)])
def test_embed_gives_unit_vectors_of_the_configured_size(layer, dim):
    config = EncoderConfig(lstm_hidden=16, dense=(12,), n_outputs=8, embedding_layer=layer)
    assert config.embedding_dim == dim
    with torch.no_grad():
        e = encoder(config).embed(windows(3))
    assert e.shape == (3, dim)
    assert torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-6)


def test_an_unknown_embedding_layer_is_refused():
    with pytest.raises(ValueError, match="embedding_layer"):
        SpeakerEncoder(EncoderConfig(embedding_layer="softmax"))


@pytest.mark.parametrize("gain_db", [-20.0, 12.0])
def test_a_recording_level_change_does_not_change_the_output(gain_db):
    """A gain multiplies mel power, so it adds a constant to every log-mel value of the window."""
    x, model = windows(), encoder()
    shifted = x + gain_db / 10 * torch.log(torch.tensor(10.0))
    with torch.no_grad():
        assert torch.allclose(model(shifted), model(x), atol=1e-5)
        assert torch.allclose(model.embed(shifted), model.embed(x), atol=1e-5)
        assert not torch.allclose(model(x[:1]), model(x[1:2]), atol=1e-3)  # yet inputs do matter


def test_a_constant_window_is_not_blown_up_by_rounding():
    """Digital silence is one log-mel value throughout; a device that sums in another order leaves
    rounding-level differences, which must not turn into another embedding (on CUDA they gave cosine 0.23)."""
    model = load_model(device="cpu")  # the bundled model: a random one is too smooth to show it
    silence = torch.full((1, WINDOW_FRAMES, N_MELS), -13.8)
    rounded = silence + 1e-6 * torch.randn(silence.shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert (model.embed(silence) * model.embed(rounded)).sum() > 0.999


def test_the_model_reads_time_along_dim_1_and_mels_along_dim_2():
    model = encoder()
    x = windows(1)  # (1, time, mel)
    mel_time = x[0].T.clone()  # the same window as a (mel, time) array, the layout librosa returns
    with torch.no_grad():
        # transposed back it is the same input; reshaped it is a different window, and the output says so
        assert torch.equal(model(mel_time.T[None]), model(x))
        assert not torch.allclose(model(mel_time.reshape(1, WINDOW_FRAMES, N_MELS)), model(x), atol=1e-3)
        # time is the recurrent axis, so any number of frames goes; the mel axis is fixed at N_MELS
        assert model(windows(2, frames=57)).shape == (2, TINY.n_outputs)
        with pytest.raises(RuntimeError):
            model(mel_time[None])  # (1, mel, time)
        # and the order of frames matters to a recurrent network
        assert not torch.allclose(model(x.flip(1)), model(x), atol=1e-4)


def test_dropout_acts_in_training_mode_only():
    model = encoder(EncoderConfig(lstm_hidden=16, dense=(12,), n_outputs=8, dropout=0.5))
    x = windows(2)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


def test_a_checkpoint_loads_back_to_identical_embeddings_and_config(tmp_path):
    config = EncoderConfig(lstm_hidden=16, dense=(12, 10), n_outputs=8, dropout=0.3, embedding_layer="dense")
    model = encoder(config)
    path = tmp_path / "sub" / "enc.pt"
    save_checkpoint(path, model, metrics={"eer": 0.05})
    loaded = load_model(path, device="cpu")
    assert loaded.config == config
    assert not loaded.training
    assert loaded.metrics == {"eer": 0.05}
    x = windows(3)
    with torch.no_grad():
        assert torch.equal(loaded.embed(x), model.embed(x))
        assert torch.equal(loaded(x), model(x))
    assert [p.name for p in path.parent.iterdir()] == ["enc.pt"]  # no temporary file left behind


def test_a_checkpoint_of_another_format_version_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "future.pt"
    save_checkpoint(path, encoder(), format_version=FORMAT_VERSION + 1)
    with pytest.raises(ModelError) as e:
        load_model(path, device="cpu")
    assert str(path) in str(e.value)
    assert f"version {FORMAT_VERSION + 1}" in str(e.value)


def test_a_checkpoint_whose_weights_do_not_fit_its_config_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "mismatch.pt"
    model = encoder()
    model.config = EncoderConfig(lstm_hidden=32, dense=(12,), n_outputs=8)  # the config of another network
    save_checkpoint(path, model)
    with pytest.raises(ModelError, match="config and weights do not match") as e:
        load_model(path, device="cpu")
    assert str(path) in str(e.value)
