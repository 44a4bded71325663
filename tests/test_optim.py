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
