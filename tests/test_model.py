import pytest
import torch

from picochat.model.gpt import GPT, GPTConfig
from picochat.model.kv_cache import KVCache


def tiny(n_kv_head: int = 0, **kw) -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig.from_depth(2, aspect_ratio=64, head_dim=32, n_kv_head=n_kv_head, vocab_size=97, seq_len=32, **kw)
    model = GPT(cfg)
    with torch.no_grad():  # the zero-initialised projections would hide bugs in attention
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_depth_rule():
    cfg = GPTConfig.from_depth(20)
    assert (cfg.n_embd, cfg.n_head, cfg.head_dim, cfg.n_kv_head) == (1280, 10, 128, 10)
    assert GPTConfig.from_depth(4, head_dim=64).n_head == 4


def test_initial_loss_is_uniform():
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, head_dim=32, vocab_size=97, seq_len=16))
    x = torch.randint(0, 97, (4, 16))
    assert abs(model(x, x).item() - torch.log(torch.tensor(97.0)).item()) < 0.05


@pytest.mark.parametrize("n_kv_head", [0, 1, 2])
def test_kv_cache_matches_full_forward(n_kv_head):
    model = tiny(n_kv_head).eval()
    x = torch.randint(0, 97, (2, 12))
    full = model(x)
    cache = KVCache.for_model(model, 2, 32)
    chunks = [model(x[:, :5], kv_cache=cache), model(x[:, 5:6], kv_cache=cache), model(x[:, 6:], kv_cache=cache)]
    assert cache.pos == 12
    torch.testing.assert_close(torch.cat(chunks, 1), full, atol=1e-5, rtol=1e-5)


def test_causality():
    model = tiny().eval()
    x = torch.randint(0, 97, (1, 10))
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % 97
    a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_softcap_bounds_logits():
    model = tiny(softcap=2.0)
    with torch.no_grad():
        model.lm_head.weight.mul_(1000)
    assert model(torch.randint(0, 97, (1, 8))).abs().max() <= 2.0


def test_loss_reduction_none_and_ignore_index():
    model = tiny()
    x = torch.randint(0, 97, (2, 8))
    t = x.clone()
    t[:, :3] = -1
    per_token = model(x, t, reduction="none")
    assert per_token.shape == (2, 8) and (per_token[:, :3] == 0).all()
    torch.testing.assert_close(per_token[:, 3:].mean(), model(x, t))


def test_flops_and_params():
    model = tiny()
    cfg = model.config
    blocks = cfg.n_layer * 12 * cfg.n_embd ** 2 if cfg.n_kv_head == cfg.n_head else None
    assert model.num_params() == 2 * cfg.vocab_size * cfg.n_embd + blocks
    attn = 12 * cfg.n_layer * cfg.n_head * cfg.head_dim * cfg.sequence_len
    assert model.flops_per_token() == 6 * (blocks + cfg.vocab_size * cfg.n_embd) + attn
