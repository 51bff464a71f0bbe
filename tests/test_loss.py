"""What the siamese KL comparison and the pairwise KL hinge loss promise, checked against hand-computed
values: KL(p||q) = sum_k p_k log(p_k / q_k); same-speaker pairs are pulled together by their KL,
different-speaker pairs pushed apart until their KL reaches the margin, each direction on its own."""
import itertools
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
    pull = kl(P, Q) + kl(Q, P)  # the same-speaker ordered pairs
    push = sum(max(0.0, margin - kl(a, b)) for a, b in [(P, R), (R, P), (Q, R), (R, Q)])
    assert loss.item() == pytest.approx((pull + push) / 6, abs=1e-12)  # the mean over all 6 ordered pairs
    # statistics call a pair "same" when its symmetric KL is under the margin
    same = kl(P, Q) + kl(Q, P) < margin
    diff = [kl(P, R) + kl(R, P) >= margin, kl(Q, R) + kl(R, Q) >= margin]
    assert stats == {"same_acc": float(same), "diff_acc": sum(diff) / 2}


def test_every_pair_weighs_the_same_whichever_group_it_is_in():
    # 1 same-speaker pair (2 ordered) among 6 pairs (12 ordered): the loss is the mean over all of them
    loss, _ = kl_hinge_loss(logs(P, P, R, Q), torch.tensor([0, 0, 1, 2]), margin=0.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-12)
    loss, _ = kl_hinge_loss(logs(P, Q, R, R), torch.tensor([0, 0, 1, 2]), margin=0.0)
    assert loss.item() == pytest.approx((kl(P, Q) + kl(Q, P)) / 12, abs=1e-12)
    hinged, _ = kl_hinge_loss(logs(P, P, R, Q), torch.tensor([0, 0, 1, 2]), margin=5.0)
    pushes = [(a, b) for a, b in itertools.permutations([P, P, R, Q], 2) if not (a == b == P)]
    assert hinged.item() == pytest.approx(sum(5.0 - kl(a, b) for a, b in pushes) / 12, abs=1e-12)


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
    assert under.item() == pytest.approx(0.5 * 8 / 12, abs=1e-9)  # 8 of the 12 ordered pairs are 0.5 short
    assert grad_under.abs().max() > 1e-2
    # descending that gradient moves the two speakers apart
    stepped = torch.log_softmax(logits.detach() - 0.1 * grad_under, dim=1)
    assert pairwise_kl(stepped)[0, 2].item() > kl_between


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_gradient_step_pulls_same_speaker_pairs_together_and_pushes_different_ones_apart(seed):
    """Each role on its own: with speakers already past the margin only the pull acts; with each
    speaker's windows already identical (no pull gradient) only the push acts."""
    torch.manual_seed(seed)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    same = (labels[:, None] == labels[None, :]) & ~torch.eye(6, dtype=torch.bool)
    diff = labels[:, None] != labels[None, :]

    def step(logits, margin):
        logits = logits.clone().requires_grad_()
        loss, _ = kl_hinge_loss(torch.log_softmax(logits, dim=1), labels, margin=margin)
        loss.backward()
        before = pairwise_kl(torch.log_softmax(logits.detach(), dim=1))
        after = pairwise_kl(torch.log_softmax(logits.detach() - 0.5 * logits.grad, dim=1))
        return before, after

    apart = peaked(0, 0, 1, 1, 2, 2, k=8) + 0.3 * torch.randn(6, 8, dtype=torch.float64)
    before, after = step(apart, margin=2.0)
    assert before[diff].min() > 2.0  # no pair pushes
    assert after[same].mean() < before[same].mean()  # same speaker: closer
    alike = torch.randn(3, 8, dtype=torch.float64).repeat_interleave(2, dim=0)
    before, after = step(alike, margin=10.0)
    assert before[same].abs().max() < 1e-12  # no pair pulls
    assert after[diff].mean() > before[diff].mean()  # different speakers: further apart


@pytest.mark.parametrize("labels", [[0, 1, 2], [3, 3, 3]], ids=["no-same-speaker-pair", "one-speaker"])
def test_a_batch_needs_a_same_speaker_pair_and_two_speakers(labels):
    with pytest.raises(ValueError, match="at least two windows of one speaker and two speakers"):
        kl_hinge_loss(logs(P, Q, R), torch.tensor(labels))


def test_eer_is_where_false_accepts_equal_false_rejects_even_on_a_straight_stretch_of_the_curve():
    import numpy as np

    from diarize.metrics import equal_error_rate

    scores = np.array([10, 9, 8, 7, -1] + list(range(6, -10, -1)), dtype=float)
    same = np.array([True] * 5 + [False] * 16)
    eer, threshold = equal_error_rate(scores, same)

    def rates(t):  # false reject, false accept at threshold t
        return (scores[same] < t).mean(), (scores[~same] >= t).mean()

    gap = min(abs(np.subtract(*rates(t))) for t in scores)  # every threshold, by brute force
    assert abs(np.subtract(*rates(threshold))) == gap
    assert eer == pytest.approx(np.mean(rates(threshold))) and eer == pytest.approx((0.2 + 3 / 16) / 2)
