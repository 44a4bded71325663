"""Configs are data: plain dataclasses, plus named presets that fill them in.

Every command's flags are generated from the fields of the dataclasses it uses (see cli.py):
field `matrix_lr` becomes `--matrix-lr`, its help is the field's `help` metadata. Values are
resolved in this order, later wins: dataclass default < preset < `--config run.toml` < flags.
Every run writes the resolved config beside its artifact, so a result can always be traced
back to the exact numbers that produced it.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from picochat.common.errors import UserError


def opt(default: Any, help: str, **kw: Any) -> Any:
    """A dataclass field with help text (shown by `--help`)."""
    return field(default=default, metadata={"help": help, **kw})


class ConfigError(UserError):
    """A configuration mistake (unknown preset, key or type); the CLI prints it as one sentence."""


@dataclass
class RunConfig:
    """Where a run lives and what it runs on; shared by every command."""

    preset: str = opt("demo", "named preset: demo, d12, d20, d24, d26, d32")
    run: str = opt("", "run name (default: the preset name); artifacts go to $PICOCHAT_HOME/runs/<run>/")
    home: str = opt("", "root for runs and downloads (default: $PICOCHAT_HOME or ~/.cache/picochat)")
    device: str = opt("auto", "auto, cpu, cuda, cuda:N or mps")
    seed: int = opt(1337, "random seed")
    mirror: str = opt("", "local directory or URL that mirrors the datasets (default: $PICOCHAT_MIRROR)")


@dataclass
class ModelConfig:
    """The GPT's shape. `depth` is the one knob: width = 64 x depth (see model/gpt.py)."""

    depth: int = opt(20, "number of transformer blocks; width = aspect_ratio x depth")
    aspect_ratio: int = opt(64, "model width per layer of depth")
    head_dim: int = opt(128, "dimension of each attention head")
    n_kv_head: int = opt(0, "key/value heads for GQA/MQA (0 = as many as query heads)")
    vocab_size: int = opt(32768, "tokenizer vocabulary size (special tokens included)")
    seq_len: int = opt(2048, "context length in tokens")
    softcap: float = opt(15.0, "logit soft-cap c: logits = c * tanh(logits / c); 0 disables")
    value_embeds: bool = opt(False, "add a per-token value embedding, gated per head, to the attention values of "
                                    "every other layer (ResFormer, arXiv:2410.17897; see model/gpt.py)")
    window_pattern: str = opt("L", "attention span per layer, tiled over the layers: L = full context, "
                                   "S = the last --window-len tokens (e.g. SSSL); the last layer is always L")
    window_len: int = opt(0, "tokens a short-window (S) layer attends to, itself included (0 = seq_len / 4)")
    residual_scalars: bool = opt(False, "learned per-layer weights: before block i the stream becomes "
                                        "a_i * x + b_i * (token embedding) (nanochat's resid/x0 lambdas)")
    smear: bool = opt(False, "add a gated share of the previous token's embedding to each position's own "
                             "(token shift, as nanochat's smear)")
    backout: bool = opt(False, "subtract a learned share of the middle layer's stream before the output head "
                               "(as nanochat's backout)")
    init_embedding_std: float = opt(1.0, "standard deviation of the token embedding at initialisation "
                                         "(nanochat: 0.8)")
    init_mlp_scale: float = opt(1.0, "scale of the MLP's input matrix at initialisation, relative to the other "
                                     "hidden matrices (nanochat: 0.4)")


@dataclass
class TokenizerConfig:
    """How the BPE tokenizer is trained."""

    vocab_size: int = opt(32768, "vocabulary size including special tokens")
    max_chars: int = opt(2_000_000_000, "characters of training text to read")
    doc_cap: int = opt(10_000, "characters kept from each document")
    source: str = opt("synthetic", "text source to train on (see `picochat data list`)")
    data: str = opt("", "your own text instead of --source: a file, folder or glob of .txt, .jsonl, .jsonl.gz "
                        "or .parquet (see data/user_corpus.py)")
    text_field: str = opt("text", "with --data: the JSON field / parquet column that holds the text")
    val_data: str = opt("", "with --data: held-out text (same formats); default: 1 in 100 documents of "
                            "--data, picked by a hash of the text")


@dataclass
class TrainConfig:
    """One training stage: the same fields drive base, mid and SFT (see train/trainer.py)."""

    source: str = opt("synthetic", "training data source (see `picochat data list`)")
    device_batch_size: int = opt(32, "sequences per device per micro-step")
    total_batch_tokens: int = opt(524288, "tokens per optimizer step, summed over devices and micro-steps "
                                          "(base: 0 = derive from the horizon, nanochat's rule; see train/horizon.py)")
    num_steps: int = opt(0, "optimizer steps (0 = base: from target_flops or target_param_data_ratio; "
                            "mid/sft/rl: one pass over the data)")
    target_param_data_ratio: float = opt(20.0, "base: training tokens per scaling parameter (block matrices + "
                                               "lm_head, as nanochat counts) when num_steps and target_flops are 0")
    matrix_lr: float = opt(0.02, "Muon learning rate for 2-D hidden matrices")
    embedding_lr: float = opt(0.2, "AdamW learning rate for the token embedding")
    unembedding_lr: float = opt(0.004, "AdamW learning rate for the output head")
    scalar_lr: float = opt(0.5, "AdamW learning rate for scalar parameters")
    weight_decay: float = opt(0.0, "decoupled weight decay for Muon matrices (the presets' base stages: 0.1)")
    muon_equilibrate: bool = opt(False, "Muon: scale the momentum update's rows to one norm before "
                                        "orthogonalising (MuonEq, as nanochat's Muon)")
    muon_variance_reduction: bool = opt(False, "Muon: per-neuron second-moment normalisation of the "
                                               "orthogonal update (NorMuon, beta2 0.9, as nanochat's Muon)")
    cautious_weight_decay: bool = opt(False, "Muon: decay only weights whose update has the same sign "
                                             "(cautious weight decay, as nanochat's Muon)")
    adamw_weight_decay: float = opt(0.0, "decoupled weight decay for the embedding and output head (AdamW)")
    embedding_beta2: float = opt(0.95, "AdamW's beta2 (second-moment decay) for the token and value embeddings")
    unembedding_beta2: float = opt(0.95, "AdamW's beta2 (second-moment decay) for the output head")
    unembedding_eps: float = opt(0.0, "AdamW's epsilon for the output head (0 = 1/(64 x total batch tokens): "
                                      "rows of tokens the batch lacks stop being pushed down once their gradient "
                                      "is that small; see optim/groups.py)")
    warmup_frac: float = opt(0.0, "fraction of steps spent warming up the learning rate")
    warmdown_frac: float = opt(0.4, "fraction of steps at the end spent decaying the learning rate")
    final_lr_frac: float = opt(0.0, "learning rate at the end, as a fraction of the peak")
    grad_clip: float = opt(1.0, "clip the global gradient norm to this (0 = off)")
    eval_every: int = opt(250, "steps between validation evals (0 = only at the end)")
    eval_tokens: int = opt(10 * 524288, "validation tokens per eval")
    save_every: int = opt(500, "steps between checkpoints (0 = only at the end)")
    snapshot_every: int = opt(0, "steps between weight-only snapshots kept in snapshots/ (a training curve to "
                                 "score later, e.g. on other data; none are pruned); 0 = none")
    dtype: str = opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32")
    compile: bool = opt(False, "torch.compile the model")
    compile_optim: bool = opt(False, "torch.compile Muon's orthogonalisation (a CUDA speed-up; slow first step on CPU)")
    fused_adamw: bool = opt(False, "AdamW through PyTorch's fused kernel (same math as the written-out one)")
    parallel: str = opt("ddp", "under torchrun: ddp (replicate the model) or fsdp (FSDP2: shard params, grads "
                               "and optimizer state; for models that outgrow one GPU)")
    log_every: int = opt(10, "steps between progress lines")
    mixture: str = opt("", "mid/sft: training conversations, a task mixture 'task[:split[:n]][*passes], ...'; "
                           "your own chat file (OpenAI messages JSONL) is the item 'chatfile:PATH[*passes]' "
                           "(see tasks/registry.py)")
    val_mixture: str = opt("", "mid/sft: held-out conversations for the validation loss (same syntax)")
    warm_start_optim: bool = opt(False, "mid/sft: start the optimizer from the previous stage's state (Muon "
                                        "momentum, AdamW moments) instead of zeros; rates and settings stay this "
                                        "stage's")
    fp8: bool = opt(False, "train the blocks' Linear layers with FP8 matmuls (GPUs with compute capability "
                           "8.9+: H100/H200, Ada, Blackwell; elsewhere one line says so and training runs without)")
    fp8_recipe: str = opt("tensorwise", "fp8 scaling: tensorwise (one scale per tensor; fastest) or rowwise "
                                        "(one per row; robust to outliers, slower)")
    core_every: int = opt(0, "base: steps between in-loop CORE evals and greedy samples (0 = off)")
    core_max_per_task: int = opt(500, "base: examples per CORE task in the in-loop eval (the same shuffled subset)")
    chatcore_every: int = opt(0, "mid/sft: steps between in-loop ChatCORE evals (0 = off)")
    chatcore_max_categorical: int = opt(-1, "sft: problems per categorical task (ARC, MMLU: one forward pass "
                                            "each) in the in-loop ChatCORE (-1 = all)")
    chatcore_max_generative: int = opt(24, "sft: problems per generative task (GSM8K, HumanEval: sampled) in the "
                                           "in-loop ChatCORE")
    chatcore_tasks: str = opt("", "sft: task specs for the in-loop ChatCORE (default: those of `picochat eval chat`)")
    tracker: str = opt("none", "experiment tracker for the logged metrics: none, tensorboard (<stage>/tensorboard/) "
                               "or wandb (offline unless WANDB_MODE=online); see common/tracking.py")
    data: str = opt("", "base: your own text instead of --source: a file, folder or glob of .txt, .jsonl, "
                        ".jsonl.gz or .parquet (see data/user_corpus.py)")
    text_field: str = opt("text", "base, with --data: the JSON field / parquet column that holds the text")
    val_data: str = opt("", "base, with --data: held-out text (same formats); default: 1 in 100 documents of "
                            "--data, picked by a hash of the text")
    target_flops: float = opt(0.0, "base: training FLOPs budget that sets the steps when num_steps is 0 "
                                   "(0 = off; wins over target_param_data_ratio)")


@dataclass
class ChatConfig:
    """`picochat chat`: which model to talk to and how to sample."""

    stage: str = opt("", "model stage: rl, sft, mid or base (default: the latest finished)")
    temperature: float = opt(0.6, "sampling temperature (0 = greedy)")
    top_k: int = opt(50, "sample among the k most likely tokens (0 = all)")
    top_p: float = opt(1.0, "nucleus sampling mass (1 = off)")
    max_tokens: int = opt(512, "most tokens per reply")


@dataclass
class ServeConfig:
    """`picochat serve`: the OpenAI-compatible API and the chat page."""

    stage: str = opt("", "model stage: rl, sft, mid or base (default: the latest finished)")
    host: str = opt("127.0.0.1", "interface to listen on (0.0.0.0 for all)")
    port: int = opt(8000, "TCP port")
    max_batch: int = opt(32, "rows (concurrent samples) decoded together per worker")
    max_queue: int = opt(64, "requests waiting per worker before the server answers 503")
    max_concurrent: int = opt(256, "requests in flight before the server answers 429")
    max_prompt_tokens: int = opt(0, "longest accepted conversation in tokens (0 = the model's context - 1)")
    max_body_bytes: int = opt(1_000_000, "largest accepted request body")
    default_max_tokens: int = opt(512, "reply length when a request gives no max_tokens")
    gpus: int = opt(0, "workers, one per GPU (0 = every visible GPU; on CPU always 1)")
    api_key: str = opt("", "require 'Authorization: Bearer KEY' on /v1/ routes (default: $PICOCHAT_API_KEY; "
                           "none = open, fine on localhost)")
    cors_origin: str = opt("", "comma-separated web origins allowed to call the API from a browser "
                               "(e.g. https://app.example; '*' = any); same-origin needs none")
    model_alias: str = opt("", "a second model name the API accepts and lists (e.g. gpt-3.5-turbo for a client "
                               "that insists on one)")
    prefill_chunk: int = opt(128, "prompt tokens per prefill pass, one pass between two decode steps "
                                  "(0 = every waiting prompt at once): bounds how long a burst of new prompts "
                                  "stalls running streams")
    quiet: bool = opt(False, "no per-request log lines")


@dataclass
class EvalConfig:
    """`picochat eval core|bpb`: which model to evaluate, on how much data."""

    stage: str = opt("base", "model stage to evaluate: base, mid, sft or rl")
    batch_size: int = opt(8, "sequences per forward pass")
    dtype: str = opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32")
    max_per_task: int = opt(-1, "core: examples per task (-1 = all; a cut is the same shuffled subset each time)")
    tasks: str = opt("", "core: comma-separated task labels (default: every task whose file is present)")
    source: str = opt("", "bpb: text source to score (default: the source the base stage trained on)")
    split: str = opt("val", "bpb: split of the source (held-out text is 'val')")
    max_docs: int = opt(0, "bpb: score at most this many documents (0 = all)")
    max_bytes: int = opt(1_000_000, "bpb: stop after this many UTF-8 bytes of text (0 = no limit)")
    data: str = opt("", "bpb: score your own text (file, folder or glob; its held-out split, see --val-data) "
                        "instead of --source")
    text_field: str = opt("text", "bpb, with --data: the JSON field / parquet column that holds the text")
    val_data: str = opt("", "bpb, with --data: the held-out text to score (default: 1 in 100 documents of "
                            "--data, picked by a hash of the text)")


@dataclass
class ChatEvalConfig:
    """`picochat eval chat`: chat benchmarks of a finished model (see eval/chat.py)."""

    stage: str = opt("", "model stage: rl, sft, mid or base (default: the latest finished)")
    task: str = opt("", "comma-separated task specs name[:split[:n]] (default: the five ChatCORE tasks "
                        "arc_easy,arc_challenge,mmlu,gsm8k:test,humaneval; demo preset: wordproblems:test:100)")
    max_problems: int = opt(-1, "problems per task (-1 = all; the first n in the task's seeded order)")
    batch_size: int = opt(8, "categorical: prompts per forward pass; generative: rows decoded together")
    num_samples: int = opt(1, "generative: samples per problem (a problem passes if any sample does)")
    max_new_tokens: int = opt(512, "generative: most tokens per reply")
    temperature: float = opt(0.0, "generative: sampling temperature (0 = greedy)")
    top_k: int = opt(50, "generative: sample among the k most likely tokens (0 = all)")
    dtype: str = opt("auto", "auto (bf16 autocast on CUDA, fp32 on CPU), bf16 or fp32")
    unsafe_sandbox: bool = opt(False, "grade model-written code (HumanEval) even where the sandbox lacks a "
                                      "required isolation layer (see picochat/sandbox/)")


@dataclass
class ReportConfig:
    """`picochat report`: the run's report card (markdown + plots) in runs/<run>/report/."""

    gpu_hour_price: float = opt(3.0, "price of one GPU-hour in dollars, for the cost estimate (H100: ~3)")


@dataclass
class GRPOConfig:
    """`picochat train rl`: GRPO-style RL on verifiable rewards (see train/rl.py). Learning rates,
    steps, eval_every and rows per forward pass (device_batch_size) come from the [rl] train row."""

    task: str = opt("gsm8k:train", "task spec whose problems are sampled and rewarded (see tasks/registry.py)")
    eval_task: str = opt("gsm8k:test", "held-out task spec for pass@1 / pass@k")
    prompts_per_step: int = opt(16, "problems per optimizer step (summed over processes)")
    samples_per_prompt: int = opt(16, "replies sampled per problem; advantages compare them (the group)")
    max_new_tokens: int = opt(256, "most tokens per sampled reply (tool outputs included)")
    temperature: float = opt(1.0, "sampling temperature of the rollouts")
    top_k: int = opt(50, "rollouts and evals sample among the k most likely tokens (0 = all)")
    std_advantages: bool = opt(False, "divide advantages by the group's reward std (GRPO) instead of only "
                                      "subtracting the mean (Dr. GRPO, nanochat)")
    kl_coef: float = opt(0.0, "KL(policy || SFT model) penalty per sampled token, k3 estimator (0 = off)")
    ppo_clip: float = opt(0.0, "PPO ratio clip epsilon, e.g. 0.2 (0 = off: plain on-policy policy gradient)")
    updates_per_batch: int = opt(1, "optimizer steps per rollout batch (> 1 needs --ppo-clip)")
    eval_problems: int = opt(400, "held-out problems per evaluation")
    pass_k: int = opt(8, "samples per held-out problem: pass@1 and pass@k use them (unbiased estimator)")
    eval_temperature: float = opt(1.0, "sampling temperature of the evaluation samples")
    max_rows: int = opt(64, "rows decoded together while sampling")
    unsafe_sandbox: bool = opt(False, "reward model-written code (HumanEval) even where the sandbox lacks a "
                                      "required isolation layer (see picochat/sandbox/)")


@dataclass
class Preset:
    """A named configuration: one row per section and per training stage."""

    name: str
    model: ModelConfig
    tokenizer: TokenizerConfig
    stages: dict[str, TrainConfig]
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    chateval: ChatEvalConfig = field(default_factory=ChatEvalConfig)


def _d(depth: int, **model: Any) -> ModelConfig:
    return ModelConfig(depth=depth, **model)


# Chat-stage mixtures (task specs, see tasks/registry.py). The GPU ones follow nanochat's
# mid-training (SmolTalk, MMLU auxiliary train, GSM8K with calculator calls, identity x2,
# spelling) and SFT (ARC-Easy/Challenge, GSM8K, 10K SmolTalk, identity, a little spelling)
# mixtures; their files come from `picochat data download` or a mirror. The demo ones are
# generated offline (tasks/synthetic.py, tasks/identity.py).
GPU_MID_MIXTURE = ("smoltalk:train, mmlu:auxiliary_train, gsm8k:train, identity:train:1000*2, "
                   "simplespelling:train:200000, spellingbee:train:80000")
GPU_MID_VAL = "smoltalk:test:24000, mmlu:test:5200, gsm8k:test:420"
GPU_SFT_MIXTURE = ("arc_easy:train, arc_challenge:train, gsm8k:train, smoltalk:train:10000, identity:train:1000, "
                   "simplespelling:train:300, spellingbee:train:300")
GPU_SFT_VAL = "smoltalk:test:5000"
DEMO_MID_MIXTURE = "wordproblems:train:3000, smalltalk:train:3000, identity:train:200"
DEMO_SFT_MIXTURE = "wordproblems:train:1500, smalltalk:train:600, identity:train:100"
DEMO_CHAT_VAL = "wordproblems:test:64, smalltalk:test:64, identity:test:16"


# Pretraining only (the chat stages were not measured with it): -0.003 val bpb at two seeds, whose
# own effect is 0.0005 (benchmarks/RESULTS.md, ablations; guide ch. 07 says why it works).
PRETRAIN_WEIGHT_DECAY = 0.1


# Value embeddings (model/gpt.py) are part of the GPU presets' model: at the quality benchmark's
# full budget they gained 0.029-0.031 bpb in domain and 0.004-0.11 on every out-of-domain set, from
# both seeds tried, at 1.003x the compiled step time (benchmarks/RESULTS.md, issue #26). The demo
# leaves them off: its README walk-through ends in `picochat export hf`, and transformers' NanoChat
# class has no value embeddings (export refuses such a model rather than change its output).
GPU_VALUE_EMBEDS = True


def _gpu_preset(name: str, depth: int, device_batch_size: int) -> Preset:
    # On a GPU the compiled model and Muon step and the fused AdamW kernel are the fast path
    # (benchmarks/RESULTS.md: d20 at 50.9% MFU); RL's rollout batches change shape, so it stays eager.
    base = TrainConfig(device_batch_size=device_batch_size, compile=True, compile_optim=True, fused_adamw=True)
    return Preset(
        name=name,
        model=_d(depth, value_embeds=GPU_VALUE_EMBEDS),
        tokenizer=TokenizerConfig(source="climbmix"),
        stages={
            # in-loop CORE + samples as nanochat's base_train (every 2000 steps, 500 examples per task)
            "base": replace(base, source="climbmix", weight_decay=PRETRAIN_WEIGHT_DECAY, core_every=2000,
                            core_max_per_task=500),
            # warm_start_optim: mid is the stage right after pretraining, the role nanochat's SFT has
            # today (it trains on the same SmolTalk + MMLU + GSM8K mixture), and nanochat's SFT
            # loads base's optimizer state by default (`--load-optimizer 1`, chosen by its sweeps:
            # commit 8180e1d "load optimizer by default when SFT"). Our SFT, after mid, has no such
            # measurement behind it and starts fresh, as nanochat's SFT after its mid stage did.
            "mid": replace(base, source="mid-mixture", num_steps=0, target_param_data_ratio=0,
                           warmdown_frac=0.2, eval_every=150, save_every=0,
                           mixture=GPU_MID_MIXTURE, val_mixture=GPU_MID_VAL, warm_start_optim=True),
            "sft": replace(base, source="sft-mixture", device_batch_size=4, total_batch_tokens=65536,
                           num_steps=0, target_param_data_ratio=0, matrix_lr=0.002, embedding_lr=0.02,
                           unembedding_lr=0.0004, warmdown_frac=1.0, eval_every=100, save_every=0,
                           mixture=GPU_SFT_MIXTURE, val_mixture=GPU_SFT_VAL,
                           # in-loop ChatCORE on nanochat's chat_sft sample (categorical tasks whole,
                           # 24 generative problems each); one pass is a few hundred steps here
                           chatcore_every=100, chatcore_max_categorical=-1, chatcore_max_generative=24),
            # RL (train/rl.py): nanochat's chat_rl trains at 5% of the base learning rates, decayed
            # linearly to 0 over one pass of GSM8K train; rows per forward pass = device_batch_size
            "rl": replace(base, source="rollouts", device_batch_size=8, num_steps=0, target_param_data_ratio=0,
                          matrix_lr=0.001, embedding_lr=0.01, unembedding_lr=0.0002, warmdown_frac=1.0,
                          eval_every=60, save_every=60, log_every=1, compile=False),
        },
    )


def _demo_preset() -> Preset:
    # Sized for 2 CPU cores: ~5.5 minutes end to end on a quiet 2-core dev box (benchmarks/RESULTS.md),
    # leaving room under the 15-minute target for slower laptops. A 3-layer, 192-wide model (~2.1M
    # params) sees ~1.5M tokens of the synthetic corpus: far below Chinchilla's 20 tokens/param, but
    # the corpus is templated and small-vocabulary, so the loss flattens within that budget (depth 3
    # reached val bpb 0.222 vs 0.231 for depth 2, at 2x the time). Small 4k-token batches give Muon
    # enough steps.
    base = TrainConfig(
        device_batch_size=16, total_batch_tokens=4096, num_steps=360, eval_every=60,
        eval_tokens=32768, save_every=60, log_every=10, warmdown_frac=0.4,
    )
    return Preset(
        name="demo",
        # A 2048-token vocabulary: on a model this narrow the (B, T, V) logits dominate a CPU step,
        # and the synthetic corpus has only ~1200 distinct words, so a larger vocab buys little.
        model=ModelConfig(depth=3, head_dim=64, vocab_size=2048, seq_len=256),
        tokenizer=TokenizerConfig(vocab_size=2048, max_chars=20_000_000, source="synthetic"),
        stages={
            "base": replace(base, weight_decay=PRETRAIN_WEIGHT_DECAY),
            # chat stages: small batches (8 rows of 256) so that ~2 CPU minutes still make
            # dozens of optimizer steps; one held-out set for both, so base -> mid -> sft compare
            "mid": replace(base, source="mid-mixture", device_batch_size=8, total_batch_tokens=2048,
                           num_steps=60, eval_every=20, eval_tokens=16384, save_every=20,
                           mixture=DEMO_MID_MIXTURE, val_mixture=DEMO_CHAT_VAL),
            "sft": replace(base, source="sft-mixture", device_batch_size=8, total_batch_tokens=2048,
                           num_steps=40, matrix_lr=0.005, embedding_lr=0.05, unembedding_lr=0.001,
                           warmdown_frac=1.0, eval_every=20, eval_tokens=16384, save_every=20,
                           mixture=DEMO_SFT_MIXTURE, val_mixture=DEMO_CHAT_VAL),
            # RL: 8 problems x 8 samples per step; RL's gradient is noisy and Muon's step has a fixed
            # size, so the rate is below SFT's (at 2x SFT's the demo model's reward collapsed)
            "rl": replace(base, source="rollouts", device_batch_size=32, num_steps=20, matrix_lr=0.0015,
                          embedding_lr=0.015, unembedding_lr=0.0003, warmdown_frac=1.0, eval_every=10,
                          save_every=10, log_every=1),
        },
        grpo=GRPOConfig(task="wordproblems:train", eval_task="wordproblems:test", prompts_per_step=8,
                        samples_per_prompt=8, max_new_tokens=64, eval_problems=128, pass_k=4, max_rows=64),
        # CORE on 20 examples per task (on CPU ~20x faster than the GPU speedrun's 100; the report says so)
        eval=EvalConfig(max_bytes=200_000, max_per_task=20),
        chateval=ChatEvalConfig(task="wordproblems:test:64", batch_size=32, max_new_tokens=64),
    )


def _leaderboard(preset: Preset, ratio: float) -> Preset:
    """A GPU preset turned into one of nanochat's "time to GPT-2" runs (its dev/LEADERBOARD.md):
    base in FP8, horizon by tokens per scaling parameter, batch derived from the horizon
    (train/horizon.py; 2^20 tokens at d24 and d26), 16 sequences per device per micro-step."""
    base = replace(preset.stages["base"], target_param_data_ratio=ratio, total_batch_tokens=0, fp8=True)
    return replace(preset, stages={**preset.stages, "base": base})


PRESETS: dict[str, Preset] = {
    "demo": _demo_preset(),
    "d12": _gpu_preset("d12", 12, 32),
    "d20": _gpu_preset("d20", 20, 32),
    # Leaderboard run 6 (d24, ratio 8, fp8: CORE 0.2626 in 1.65 h on 8xH100) and run 3 (d26, ratio
    # 8.25, fp8, 2^20-token batch: CORE 0.2602), the latest of each depth
    "d24": _leaderboard(_gpu_preset("d24", 24, 16), ratio=8.0),
    "d26": _leaderboard(_gpu_preset("d26", 26, 16), ratio=8.25),
    "d32": _gpu_preset("d32", 32, 8),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset '{name}'{_suggest(name, PRESETS)}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def _suggest(name: str, choices: Any) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def section_name(cls: type) -> str:
    """`TrainConfig` -> `train`: the table name in a TOML file and the key in a resolved config."""
    return cls.__name__.removesuffix("Config").lower()


def preset_section(preset: Preset, cls: type, stage: str | None) -> Any:
    """The preset's row for a config section (a fresh copy), or the dataclass defaults."""
    if cls is ModelConfig:
        return replace(preset.model)
    if cls is TokenizerConfig:
        return replace(preset.tokenizer)
    if cls is TrainConfig and stage is not None and stage in preset.stages:
        return replace(preset.stages[stage])
    if cls is RunConfig:
        return RunConfig(preset=preset.name)
    if cls is GRPOConfig:
        return replace(preset.grpo)
    if cls is EvalConfig:
        return replace(preset.eval)
    if cls is ChatEvalConfig:
        return replace(preset.chateval)
    return cls()


def coerce(cls: type, key: str, value: Any) -> Any:
    """Check a TOML value against the field's type; a wrong type is a ConfigError."""
    ftype = {f.name: f.type for f in fields(cls)}[key]
    kind = {"int": int, "float": (int, float), "bool": bool, "str": str}.get(str(ftype), object)
    if isinstance(value, bool) and ftype != "bool" or not isinstance(value, kind):
        raise ConfigError(f"config key '{key}' should be {ftype}, got {value!r}")
    return float(value) if ftype == "float" else value


def load_toml(path: str) -> dict[str, Any]:
    try:
        return tomllib.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file '{path}' does not exist") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file '{path}' is not valid TOML: {e}") from None


def apply_tables(sections: dict[str, Any], data: dict[str, Any], path: str, *, only_known: bool = False) -> None:
    """Overlay TOML tables onto the sections in place. Unknown keys are errors; so are unknown
    tables, unless only_known (the speedrun hands one file to every step, each taking its tables)."""
    for table, values in data.items():
        if table not in sections and only_known:
            continue
        if table not in sections:
            raise ConfigError(f"unknown table [{table}] in '{path}'{_suggest(table, sections)}")
        obj = sections[table]
        names = [f.name for f in fields(obj)]
        for key, value in values.items():
            if key not in names:
                raise ConfigError(f"unknown key '{key}' in [{table}] of '{path}'{_suggest(key, names)}")
            setattr(obj, key, coerce(type(obj), key, value))


def to_dict(sections: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: dataclasses.asdict(obj) for name, obj in sections.items()}
