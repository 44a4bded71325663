import torch

from picochat.optim.adamw import AdamW
from picochat.optim.muon import Muon, orthogonalize
from picochat.optim.schedule import lr_multiplier, muon_momentum


def test_orthogonalize_singular_values_near_one():
    torch.manual_seed(0)
    # Well-conditioned inputs (rectangular Gaussians): every singular value lands near 1.
    for shape in [(32, 128), (128, 32), (4, 24, 96)]:
        G = torch.randn(*shape)
        S = torch.linalg.svdvals(orthogonalize(G))
        assert S.min() > 0.7 and S.max() < 1.2, (shape, S.min(), S.max())
    # A square Gaussian has a few tiny singular values; 5 steps cannot lift those all the way, but
    # the bulk is at 1 and none overshoots.
    S = torch.linalg.svdvals(orthogonalize(torch.randn(64, 64)))
    assert S.median() > 0.85 and S.max() < 1.2
    for shape in [(32, 128), (128, 32)]:
        G = torch.randn(*shape)
        # the singular vectors are kept: the output is close to U Vᵀ
        U, _, Vh = torch.linalg.svd(G, full_matrices=False)
        assert torch.nn.functional.cosine_similarity(orthogonalize(G).flatten(), (U @ Vh).flatten(), dim=0) > 0.98


def _toy_regression(opt_cls, **kw):
    torch.manual_seed(0)
    W_true = torch.randn(16, 32)
    W = torch.nn.Parameter(torch.zeros(16, 32))
    opt = opt_cls([W], **kw)
    X = torch.randn(256, 32)
    losses = []
    for step in range(100):
        for group in opt.param_groups:  # linear decay, as in training: Muon's step size does not shrink by itself
            group["lr"] = kw["lr"] * (1 - step / 100)
        loss = ((X @ W.T - X @ W_true.T) ** 2).mean()
        loss.backward()
        opt.step()
        W.grad = None
        losses.append(loss.item())
    return losses


def test_muon_reduces_toy_loss():
    losses = _toy_regression(Muon, lr=0.3)  # the orthogonal step has a fixed size: lr sets how far W moves
    assert losses[-1] < 0.05 * losses[0]


def test_muon_refinements_reduce_toy_loss():
    refined = dict(equilibrate_rows=True, variance_reduction=True, cautious_wd=True, weight_decay=0.01)
    losses = _toy_regression(Muon, lr=0.3, **refined)
    assert losses[-1] < 0.05 * losses[0]


def _one_step(shape, lr=0.1, wd=0.0, **options):
    torch.manual_seed(0)
    start, grad = torch.randn(shape), torch.randn(shape)
    W = torch.nn.Parameter(start.clone())
    W.grad = grad.clone()
    Muon([W], lr=lr, weight_decay=wd, **options).step()
    return start, W.detach()


def test_variance_reduction_equalises_neurons_and_fixes_the_step_size():
    """NorMuon's first step: every row (every column of a wide matrix) moves by the same amount, and
    the whole step is an exact orthogonal matrix's size, sqrt(min(m, n)), times the rate."""
    for shape, dim in [((48, 16), -1), ((16, 48), -2)]:
        lr, scale = 0.1, max(1.0, shape[0] / shape[1]) ** 0.5
        start, after = _one_step(shape, lr=lr, variance_reduction=True)
        step = (after - start) / (lr * scale)
        torch.testing.assert_close(step.norm(), torch.tensor(min(shape) ** 0.5), rtol=1e-5, atol=0)
        per_neuron = step.norm(dim=dim)
        assert per_neuron.max() / per_neuron.min() < 1 + 1e-4
        _, plain = _one_step(shape, lr=lr)
        plain_neuron = ((plain - start) / (lr * scale)).norm(dim=dim)
        assert plain_neuron.max() / plain_neuron.min() > 1.05  # without it they differ


def test_cautious_weight_decay_only_decays_along_the_update():
    """Entries whose update has the weight's sign are decayed by lr x wd (as plain decay); the
    others are not decayed at all."""
    lr, wd = 0.1, 0.5
    start, no_decay = _one_step((24, 24), lr=lr)
    _, cautious = _one_step((24, 24), lr=lr, wd=wd, cautious_wd=True)
    update = start - no_decay                     # lr x the orthogonal update (its sign is the update's)
    same_sign = update * start >= 0
    expected = no_decay - lr * wd * start * same_sign
    torch.testing.assert_close(cautious, expected)
    assert 0.2 < same_sign.float().mean() < 0.8   # both kinds of entry are exercised


def test_adamw_reduces_toy_loss():
    losses = _toy_regression(AdamW, lr=0.05)
    assert losses[-1] < 0.05 * losses[0]


def test_adamw_matches_torch_adamw():
    torch.manual_seed(0)
    p1 = torch.nn.Parameter(torch.randn(10, 5))
    p2 = torch.nn.Parameter(p1.detach().clone())
    ours = AdamW([p1], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    ref = torch.optim.AdamW([p2], lr=0.01, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1)
    for _ in range(5):
        g = torch.randn(10, 5)
        p1.grad, p2.grad = g.clone(), g.clone()
        ours.step()
        ref.step()
    torch.testing.assert_close(p1, p2)


def test_schedules():
    assert lr_multiplier(0.0) == 1.0 and lr_multiplier(0.5) == 1.0
    assert abs(lr_multiplier(0.8, warmdown_frac=0.4) - 0.5) < 1e-9
    assert lr_multiplier(1.0, warmdown_frac=0.4, final_lr_frac=0.1) == 0.1
    assert lr_multiplier(0.05, warmup_frac=0.1) < 0.6
    assert muon_momentum(0) == 0.85 and muon_momentum(1000) == 0.95
