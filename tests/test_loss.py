"""What the siamese KL comparison and the pairwise KL hinge loss promise, checked against hand-computed
values: KL(p||q) = sum_k p_k log(p_k / q_k); same-speaker pairs are pulled together by their KL,
different-speaker pairs pushed apart until their KL reaches the margin, each direction on its own."""
import math

import pytest
import torch

from diarize.loss import kl_hinge_loss, pairwise_kl
from diarize.model import EncoderConfig, SiameseKL, SpeakerEncoder, symmetric_kl

P, Q, R = [0.8, 0.2], [0.4, 0.6], [0.1, 0.9]  # three 2-class output distributions


def kl(a: list[float], b: list[float]) -> float:
    """KL(a||b) by hand."""
    return sum(x * math.log(x / y) for x, y in zip(a, b))


def logs(*dists: list[float]) -> torch.Tensor:
    return torch.tensor(dists, dtype=torch.float64).log()


def test_kl_of_two_distributions_matches_the_hand_computed_value():
    # KL(P||Q) = 0.8 log 2 + 0.2 log(1/3) = 0.3348; KL(Q||P) = 0.4 log(1/2) + 0.6 log 3 = 0.3819
    assert kl(P, Q) == pytest.approx(0.8 * math.log(2) - 0.2 * math.log(3)) == pytest.approx(0.33480, abs=1e-5)
    assert kl(Q, P) == pytest.approx(-0.4 * math.log(2) + 0.6 * math.log(3)) == pytest.approx(0.38191, abs=1e-5)
    kls = pairwise_kl(logs(P, Q))
    assert kls.flatten().tolist() == pytest.approx([0.0, kl(P, Q), kl(Q, P), 0.0], abs=1e-12)


def test_pairwise_kl_holds_kl_of_row_i_against_row_j():
    kls = pairwise_kl(logs(P, Q, R))
    for i, a in enumerate([P, Q, R]):
        for j, b in enumerate([P, Q, R]):
            assert kls[i, j].item() == pytest.approx(kl(a, b), abs=1e-12)


def test_symmetric_kl_is_both_directions_added_and_does_not_depend_on_the_order():
    a, b = logs(P, R), logs(Q, Q)
    assert symmetric_kl(a, b).tolist() == pytest.approx([kl(P, Q) + kl(Q, P), kl(R, Q) + kl(Q, R)])
    assert torch.equal(symmetric_kl(a, b), symmetric_kl(b, a))
    assert symmetric_kl(a, a).tolist() == [0.0, 0.0]


def test_siamese_kl_sends_both_inputs_through_the_same_encoder_and_is_symmetric():
    torch.manual_seed(0)
    encoder = SpeakerEncoder(EncoderConfig(lstm_hidden=8, dense=(8,), n_outputs=4)).eval()
    siamese = SiameseKL(encoder)
    a, b = torch.randn(3, 40, 128), torch.randn(3, 40, 128)
    with torch.no_grad():
        d = siamese(a, b)
        assert torch.allclose(d, symmetric_kl(encoder(a), encoder(b)))
        assert torch.allclose(d, siamese(b, a))
        assert (d > 0).all()
        assert siamese(a, a).abs().max() < 1e-6


@pytest.mark.parametrize("margin", [2.0, 1.2])
def test_loss_matches_a_hand_computed_batch(margin):
    """Windows P, Q of one speaker and R of another. At margin 1.2 KL(P||R) = 1.36 is past the margin
    while KL(R||P) = 1.15 is not: each direction of a pair is hinged on its own."""
    loss, stats = kl_hinge_loss(logs(P, Q, R), torch.tensor([0, 0, 1]), margin)
    pull = (kl(P, Q) + kl(Q, P)) / 2  # the same-speaker ordered pairs
    push = sum(max(0.0, margin - kl(a, b)) for a, b in [(P, R), (R, P), (Q, R), (R, Q)]) / 4
    assert loss.item() == pytest.approx(pull + push, abs=1e-12)
    # statistics call a pair "same" when its symmetric KL is under the margin
    same = kl(P, Q) + kl(Q, P) < margin
    diff = [kl(P, R) + kl(R, P) >= margin, kl(Q, R) + kl(R, Q) >= margin]
    assert stats == {"same_acc": float(same), "diff_acc": sum(diff) / 2}


def test_same_and_different_pairs_weigh_the_same_however_many_there_are():
    # 1 same-speaker pair against 4 different ones: each group is averaged on its own, then added
    loss, _ = kl_hinge_loss(logs(P, P, R, Q), torch.tensor([0, 0, 1, 2]), margin=0.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss, _ = kl_hinge_loss(logs(P, Q, R, R), torch.tensor([0, 0, 1, 2]), margin=0.0)
    assert loss.item() == pytest.approx((kl(P, Q) + kl(Q, P)) / 2, abs=1e-12)


def peaked(*classes: int, k: int = 4, height: float = 5.0) -> torch.Tensor:
    """Logits peaked on the given class, one row per entry."""
    logits = torch.zeros(len(classes), k, dtype=torch.float64)
    logits[torch.arange(len(classes)), torch.tensor(classes)] = height
    return logits


def test_loss_is_zero_for_identical_same_speaker_outputs_and_different_speakers_past_the_margin():
    log_p = torch.log_softmax(peaked(0, 0, 1, 1, 2), dim=1)  # KL between speakers: 4.87 each way
    assert pairwise_kl(log_p)[0, 2].item() > 2.0
    loss, stats = kl_hinge_loss(log_p, torch.tensor([0, 0, 1, 1, 2]), margin=2.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-9)
    assert stats == {"same_acc": 1.0, "diff_acc": 1.0}


def test_the_hinge_acts_only_under_the_margin():
    logits = peaked(0, 0, 1, 1).requires_grad_()
    labels = torch.tensor([0, 0, 1, 1])
    kl_between = pairwise_kl(torch.log_softmax(logits, dim=1))[0, 2].item()  # 4.87
    past, _ = kl_hinge_loss(torch.log_softmax(logits, dim=1), labels, margin=kl_between - 0.5)
    (grad_past,) = torch.autograd.grad(past, logits)
    assert past.item() == pytest.approx(0.0, abs=1e-9)
    assert grad_past.abs().max() < 1e-9  # past the margin a pair pushes no more
    under, _ = kl_hinge_loss(torch.log_softmax(logits, dim=1), labels, margin=kl_between + 0.5)
    (grad_under,) = torch.autograd.grad(under, logits)
    assert under.item() == pytest.approx(0.5, abs=1e-9)
    assert grad_under.abs().max() > 1e-2
    # descending that gradient moves the two speakers apart
    stepped = torch.log_softmax(logits.detach() - 0.1 * grad_under, dim=1)
    assert pairwise_kl(stepped)[0, 2].item() > kl_between


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_gradient_step_pulls_same_speaker_pairs_together_and_pushes_different_ones_apart(seed):
    torch.manual_seed(seed)
    logits = torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(6, dtype=torch.bool)
    diff = labels[:, None] != labels[None, :]

    def mean_kls(z):
        kls = pairwise_kl(torch.log_softmax(z, dim=1))
        return kls[same].mean().item(), kls[diff].mean().item()

    loss, _ = kl_hinge_loss(torch.log_softmax(logits, dim=1), labels, margin=10.0)  # every pair under
    loss.backward()
    before, after = mean_kls(logits.detach()), mean_kls(logits.detach() - 0.05 * logits.grad)
    assert after[0] < before[0]  # same speaker: closer
    assert after[1] > before[1]  # different speakers: further apart


@pytest.mark.parametrize("labels", [[0, 1, 2], [3, 3, 3]], ids=["no-same-speaker-pair", "one-speaker"])
def test_a_batch_needs_a_same_speaker_pair_and_two_speakers(labels):
    with pytest.raises(ValueError, match="at least two windows of one speaker and two speakers"):
        kl_hinge_loss(logs(P, Q, R), torch.tensor(labels))
