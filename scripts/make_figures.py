"""Draw the guide's figures into docs/guide/img/ (PNG, matplotlib Agg).

    python scripts/make_figures.py            # all figures (trains a tiny model: a few CPU minutes)
    python scripts/make_figures.py --only bpe,schedule,rope   # the ones that need no training

The attention and loss figures come from a real run: a BPE tokenizer trained on the offline
synthetic corpus, then a tiny GPT trained by the real `Trainer` for `--steps` steps; the loss
curves are read back from the run's metrics.jsonl. Model initialisation and data order are
seeded, so a rerun on the same code draws the same pictures up to floating-point noise; a change
to the synthetic corpus changes them.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

from picochat.optim.schedule import lr_multiplier, muon_momentum  # noqa: E402
from picochat.tokenizer import bpe  # noqa: E402

OUT = Path(__file__).resolve().parent.parent / "docs" / "guide" / "img"
DPI = 110


def save(fig, name: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT / name, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    print(f"wrote {OUT / name} ({(OUT / name).stat().st_size // 1024} KB)")


# ---------------------------------------------------------------------------------------- BPE

BPE_TEXT = "the cat sat on the mat; the cat ate the hat, that hat"


def figure_bpe() -> None:
    """The segmentation of one text after 0, 1, 2, ... merges learned on that same text."""
    merges = bpe.train([BPE_TEXT], 12)
    vocab = bpe.vocab_bytes(merges)
    steps = [0, 1, 2, 3, 4, 6, 8, 12]
    fig, ax = plt.subplots(figsize=(11, 0.55 * len(steps) + 1.2))
    cmap = plt.get_cmap("tab20")
    xmax = 0.0
    for row, k in enumerate(steps):
        ids = bpe.encode(BPE_TEXT, merges[:k])
        x, y = 0.0, len(steps) - 1 - row
        for t in ids:
            s = vocab[t].decode("utf-8", "replace")
            w = 0.2 * len(s) + 0.08
            color = "white" if t < 256 else cmap((t - 256) % 20)
            ax.add_patch(plt.Rectangle((x, y + 0.12), w - 0.03, 0.76, facecolor=color, edgecolor="0.4", lw=0.6))
            ax.text(x + (w - 0.03) / 2, y + 0.5, s.replace(" ", "␣"), ha="center", va="center",
                    fontsize=8, family="monospace")
            x += w
        xmax = max(xmax, x)
        newest = "" if k == 0 else "newest " + repr(vocab[256 + k - 1].decode()).replace(" ", "␣")
        ax.text(-0.2, y + 0.5, f"{k:>2} merges, {len(ids):>2} tokens  {newest}", ha="right",
                va="center", fontsize=8, family="monospace")
    ax.set_xlim(-5.6, xmax + 0.1)
    ax.set_ylim(-0.1, len(steps))
    ax.axis("off")
    ax.set_title(f"BPE on one sentence: each merge joins the most frequent adjacent pair (bpe.train)\n"
                 f"text: {BPE_TEXT!r}", fontsize=9)
    save(fig, "bpe_merges.png")


# ----------------------------------------------------------------------------------- schedule

def figure_schedule() -> None:
    p = [i / 1000 for i in range(1001)]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot(p, [lr_multiplier(x, 0.0, 0.4, 0.0) for x in p], label="base (warmdown 0.4)")
    a.plot(p, [lr_multiplier(x, 0.0, 1.0, 0.0) for x in p], "--", label="SFT / RL (warmdown 1.0)")
    a.plot(p, [lr_multiplier(x, 0.05, 0.2, 0.1) for x in p], ":", label="warmup 0.05, warmdown 0.2, final 0.1")
    a.set_xlabel("progress = step / num_steps")
    a.set_ylabel("learning-rate multiplier")
    a.set_title("lr_multiplier (optim/schedule.py)", fontsize=10)
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    steps = list(range(0, 600))
    b.plot(steps, [muon_momentum(s) for s in steps])
    b.set_xlabel("step")
    b.set_ylabel("Muon momentum")
    b.set_title("muon_momentum: 0.85 → 0.95 over 300 steps", fontsize=10)
    b.grid(alpha=0.3)
    save(fig, "lr_schedule.png")


# --------------------------------------------------------------------------------------- RoPE

def figure_rope() -> None:
    from picochat.model.gpt import apply_rotary, rotary_tables

    D, T = 64, 256
    cos, sin = rotary_tables(T, D)
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 3.6), gridspec_kw={"wspace": 0.35})
    im = a.imshow(cos[0, :, 0, :].T.numpy(), aspect="auto", cmap="RdBu", vmin=-1, vmax=1,
                  interpolation="nearest")
    a.set_xlabel("position t")
    a.set_ylabel("pair index i")
    a.set_title(f"cos(t·θ_i), D = {D}: fast pairs on top, slow below", fontsize=10)
    fig.colorbar(im, ax=a)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 1, 1, D, generator=g), torch.randn(1, 1, 1, D, generator=g)
    for m in (0, 40, 120):
        offsets = list(range(0, T - m))
        qm = apply_rotary(q, cos[:, m:m + 1], sin[:, m:m + 1])
        scores = [(qm * apply_rotary(k, cos[:, m + d:m + d + 1], sin[:, m + d:m + d + 1])).sum().item()
                  for d in offsets]
        b.plot(offsets, scores, lw=1.2 if m == 0 else 0, marker=None if m == 0 else ".", ms=2,
               label=f"query at m = {m}")
    b.set_xlabel("offset n - m between key and query")
    b.set_ylabel("⟨R_m q, R_n k⟩")
    b.set_title("the rotated dot product depends only on n - m", fontsize=10)
    b.legend(fontsize=8)
    b.grid(alpha=0.3)
    save(fig, "rope.png")


# --------------------------------------------------------------------- tiny trained demo model

def train_tiny(steps: int, workdir: Path):
    """Tokenizer + tiny GPT on the synthetic corpus through the real Trainer. Returns
    (model, tokenizer, metrics records)."""
    from picochat.config import TrainConfig
    from picochat.data import synthetic
    from picochat.data.corpus import SyntheticCorpus
    from picochat.data.loader import batches_from_corpus
    from picochat.model.gpt import GPT, GPTConfig
    from picochat.tokenizer.tokenizer import Tokenizer
    from picochat.train.trainer import Batch, Trainer

    docs = [d for i in range(40) for d in synthetic.chunk("train", i)]
    tok = Tokenizer.train(docs, vocab_size=1024)
    torch.manual_seed(0)
    model = GPT(GPTConfig.from_depth(2, head_dim=32, vocab_size=tok.vocab_size, seq_len=128))
    cfg = TrainConfig(device_batch_size=8, total_batch_tokens=8 * 128, num_steps=steps, eval_every=25,
                      eval_tokens=8 * 128 * 4, save_every=0, log_every=5, warmdown_frac=0.4)

    class Stage:
        name = "figures"

        def _batches(self, split, cursor):
            corpus = SyntheticCorpus("synthetic", split)
            for x, y, c in batches_from_corpus(corpus, tok, 8, 128, cursor=cursor, tokenizer_threads=1):
                yield Batch(x, y, None, c)

        def batches(self, cursor):
            return self._batches("train", cursor)

        def val_batches(self):
            return self._batches("val", None)

    trainer = Trainer(model, cfg, workdir / "base", num_steps=steps, device=torch.device("cpu"),
                      token_bytes=torch.tensor(tok.token_bytes()))
    trainer.fit(Stage())
    records = [json.loads(line) for line in (workdir / "base" / "metrics.jsonl").read_text().splitlines()]
    return model.eval(), tok, records


@torch.no_grad()
def attention_maps(model, idx: torch.Tensor) -> list[torch.Tensor]:
    """Softmax attention weights (H, T, T) of every layer, recomputed exactly as
    CausalSelfAttention.forward computes them (SDPA hides them)."""
    from picochat.model.gpt import apply_rotary, rms_norm

    T = idx.size(1)
    cos, sin = model.cos[:, :T], model.sin[:, :T]
    x = rms_norm(model.wte(idx))
    maps = []
    for block in model.blocks:
        attn, h = block.attn, rms_norm(x)
        q = attn.c_q(h).view(1, T, attn.n_head, attn.head_dim)
        k = attn.c_k(h).view(1, T, attn.n_kv_head, attn.head_dim)
        q, k = rms_norm(apply_rotary(q, cos, sin)), rms_norm(apply_rotary(k, cos, sin))
        q, k = q.transpose(1, 2), k.transpose(1, 2).repeat_interleave(attn.n_head // attn.n_kv_head, dim=1)
        scores = (q @ k.mT) / attn.head_dim ** 0.5
        scores = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), float("-inf"))
        maps.append(scores.softmax(-1)[0])
        x = block(x, cos, sin)
    return maps


def figure_attention(model, tok) -> None:
    text = "Tom has 3 apples. Anna gives Tom 4 more apples. Now Tom has 7 apples."
    ids = tok.encode(text, prepend=tok.bos_id)
    maps = attention_maps(model, torch.tensor([ids]))
    labels = ["<bos>"] + [tok.id_to_bytes(i).decode("utf-8", "replace").replace(" ", "␣") for i in ids[1:]]
    n_layer, n_head = len(maps), maps[0].size(0)
    fig, axes = plt.subplots(n_layer, n_head, figsize=(3.6 * n_head, 3.6 * n_layer), squeeze=False)
    for layer in range(n_layer):
        for h in range(n_head):
            ax = axes[layer][h]
            ax.imshow(maps[layer][h].numpy(), cmap="viridis", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"layer {layer}, head {h}", fontsize=9)
            ax.set_xticks(range(len(labels)))
            ax.set_yticks(range(len(labels)))
            ax.set_xticklabels(labels, rotation=90, fontsize=6, family="monospace")
            ax.set_yticklabels(labels, fontsize=6, family="monospace")
    fig.suptitle("Attention weights of the tiny trained model (rows: queries, columns: keys; "
                 "the upper triangle is masked)", fontsize=10)
    fig.tight_layout()
    save(fig, "attention.png")


def figure_loss(records: list[dict], steps: int) -> None:
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in records if "val_loss" in r]
    bpb = [(r["step"], r["val_bpb"]) for r in records if "val_bpb" in r]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.2))
    a.plot(*zip(*train), lw=1, label="train loss (each logged step's batch)")
    a.plot(*zip(*val), marker="o", label="validation loss")
    a.set_xlabel("step")
    a.set_ylabel("cross-entropy (nats/token)")
    a.set_title(f"tiny GPT on the synthetic corpus, {steps} steps", fontsize=10)
    a.legend(fontsize=8)
    a.grid(alpha=0.3)
    b.plot(*zip(*bpb), marker="o", color="C2")
    b.set_xlabel("step")
    b.set_ylabel("bits per byte")
    b.set_title("validation bits per byte", fontsize=10)
    b.grid(alpha=0.3)
    save(fig, "loss_curves.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", default="bpe,schedule,rope,train", help="comma-separated: bpe, schedule, rope, train")
    ap.add_argument("--steps", type=int, default=250, help="training steps of the tiny model (default: 250)")
    args = ap.parse_args()
    which = set(args.only.split(","))
    if "bpe" in which:
        figure_bpe()
    if "schedule" in which:
        figure_schedule()
    if "rope" in which:
        figure_rope()
    if "train" in which:
        with tempfile.TemporaryDirectory() as tmp:
            model, tok, records = train_tiny(args.steps, Path(tmp))
        figure_loss(records, args.steps)
        figure_attention(model, tok)


if __name__ == "__main__":
    main()
