"""`picochat <noun> <verb> [flags]`: parse, resolve the config, call one function.

This package is the top layer: the command table and parser here, and beside them the commands
that drive several layers below (train.py: the stages with eval's evaluators; speedrun.py with its
plan.py and cost.py; launch.py: torchrun; chat.py: the terminal chat). Nothing below imports it.

The command table below is the whole CLI surface. Each row names the function it calls
("module:function", imported only when that command runs, so `--help` stays instant) and the
config dataclasses whose fields become its flags. The function receives a `Resolved`: one
attribute per config section (`cfg.run`, `cfg.model`, `cfg.train`, ...) plus `cfg.args` for
the command's own extra arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from dataclasses import dataclass, fields
from types import SimpleNamespace
from typing import Any

from picochat import config as C
from picochat.common.errors import UserError

Arg = tuple[tuple[str, ...], dict[str, Any]]  # (flags, argparse kwargs) for extra arguments


@dataclass(frozen=True)
class Command:
    words: tuple[str, ...]
    help: str
    target: str
    sections: tuple[type, ...] = (C.RunConfig,)
    stage: str | None = None  # which preset row fills TrainConfig
    extra: tuple[Arg, ...] = ()
    shares_config: bool = False  # hands its --config to sub-steps, so takes only the tables it knows


COMMANDS: list[Command] = [
    Command(("tokenizer", "train"), "train the BPE tokenizer on a text source (kept if already trained; --force)",
            "picochat.tokenizer.commands:train_main", (C.RunConfig, C.TokenizerConfig),
            extra=((("--force",), {"action": "store_true", "help": "retrain even if a complete tokenizer exists"}),)),
    Command(("tokenizer", "eval"), "bytes per token on held-out text: the run's tokenizer beside any others given",
            "picochat.tokenizer.commands:eval_main", (C.RunConfig, C.TokenizerConfig),
            extra=((("files",), {"nargs": "*", "metavar": "TOKENIZER_JSON", "help": "other tokenizer files"}),
                   (("--chars",), {"type": int, "default": 5_000_000,
                                   "help": "held-out characters to encode (default: 5000000)"}))),
    Command(("train", "base"), "pretrain the GPT on the base corpus", "picochat.cli.train:base_main",
            (C.RunConfig, C.ModelConfig, C.TrainConfig), stage="base"),
    Command(("train", "mid"), "mid-train the base model on a mixture of conversations (chat format, tools)",
            "picochat.cli.train:mid_main", (C.RunConfig, C.TrainConfig), stage="mid"),
    Command(("train", "sft"), "chat SFT on a curated mixture of conversations (loss on assistant tokens)",
            "picochat.cli.train:sft_main", (C.RunConfig, C.TrainConfig), stage="sft"),
    Command(("train", "rl"), "RL on verifiable rewards from the SFT model (GRPO-style; pass@k evals)",
            "picochat.cli.train:rl_main", (C.RunConfig, C.TrainConfig, C.GRPOConfig), stage="rl"),
    Command(("speedrun",), "the whole pipeline: tokenizer, base, mid, SFT, RL, evals, report (resumes; --dry-run)",
            "picochat.cli.speedrun:main", (C.RunConfig,), shares_config=True,
            extra=((("--dry-run",), {"action": "store_true",
                                     "help": "print the plan, tokens, time and cost; train nothing"}),
                   (("--skip",), {"default": "", "help": "comma-separated steps to skip, e.g. rl,eval-rl"}),
                   (("--gpus",), {"type": int, "default": 1,
                                  "help": "GPUs on this node: the training stages run on this many processes through "
                                          "torchrun (with --device cpu: CPU processes, gloo); also sizes the cost "
                                          "estimate (default: 1)"}),
                   (("--gpu-hour-price",), {"type": float, "default": 3.0,
                                            "help": "dollars per GPU-hour for the cost estimate (default: 3.0)"}),
                   (("--mfu",), {"type": float, "default": 0.4,
                                 "help": "assumed MFU when throughput cannot be measured here (default: 0.4)"}),
                   (("--data",), {"default": "", "help": "pretrain (tokenizer and base) on your own text: a file, "
                                  "folder or glob of .txt, .jsonl, .jsonl.gz or .parquet"}),
                   (("--text-field",), {"default": "text", "help": "with --data: the JSON field / parquet "
                                        "column holding the text (default: text)"}),
                   (("--val-data",), {"default": "", "help": "with --data: held-out text (default: 1 in 100 "
                                      "documents of --data, by a hash of the text)"}))),
    Command(("chat",), "talk to a trained model in the terminal (streaming, multi-turn, /clear)",
            "picochat.cli.chat:main", (C.RunConfig, C.ChatConfig),
            extra=((("-p", "--prompt"), {"default": "", "help": "one-shot: answer this prompt, print, exit"}),)),
    Command(("serve",), "serve the chat page and an OpenAI-compatible API (/v1/chat/completions)",
            "picochat.serve.app:main", (C.RunConfig, C.ServeConfig)),
    Command(("eval", "core"), "CORE in-context-learning score of a trained model (CORE-n when tasks are missing)",
            "picochat.eval.commands:core_main", (C.RunConfig, C.EvalConfig)),
    Command(("eval", "chat"), "chat benchmarks (ARC, MMLU, GSM8K, HumanEval, ...; --task) and ChatCORE of a model",
            "picochat.eval.chat:main", (C.RunConfig, C.ChatEvalConfig)),
    Command(("eval", "samples"), "greedy completions of fixed prompts (for the report card)",
            "picochat.eval.samples:main", (C.RunConfig,),
            extra=((("--stage",), {"default": "base", "help": "model stage: base, mid, sft or rl (default: base)"}),
                   (("--max-tokens",), {"type": int, "default": 24, "help": "tokens per completion (default: 24)"}))),
    Command(("report",), "write the run's report card: report/report.md with metrics table, cost and plots",
            "picochat.eval.report:main", (C.RunConfig, C.ReportConfig)),
    Command(("eval", "bpb"), "bits per byte of a trained model on held-out text (tokenizer-independent)",
            "picochat.eval.commands:bpb_main", (C.RunConfig, C.EvalConfig)),
    Command(("export", "hf"), "write a finished model as a Hugging Face folder (safetensors, NanoChat config, "
            "tokenizer + chat template, model card)", "picochat.export.hf:main", (C.RunConfig,),
            extra=((("out",), {"metavar": "OUT", "help": "folder to write (must be new or empty unless --force)"}),
                   (("--stage",), {"default": "", "help": "rl, sft, mid or base (default: the latest finished)"}),
                   (("--dtype",), {"default": "float32", "help": "float32 (the weights as trained) or bfloat16"}),
                   (("--force",), {"action": "store_true", "help": "replace OUT if it exists"}))),
    Command(("data", "list"), "list the data sources: license, size, and whether they are here",
            "picochat.data.commands:list_main", (C.RunConfig,),
            extra=((("-v", "--verbose"), {"action": "store_true", "help": "also show URLs and files"}),)),
    Command(("data", "download"), "download a source's files (parallel, resumable, verified; --mirror)",
            "picochat.data.commands:download_main", (C.RunConfig,),
            extra=((("source",), {"help": "source name (see `picochat data list`)"}),
                   (("--shards",), {"default": "0-7", "help": "shards of a sharded source, e.g. 0-23,40; the "
                                    "validation shard is always added (default: 0-7)"}),
                   (("--workers",), {"type": int, "default": 8, "help": "parallel downloads (default: 8)"}))),
    Command(("data", "prepare"), "check that a pretraining source's train and val splits read, and summarise them",
            "picochat.data.commands:prepare_main", (C.RunConfig,),
            extra=((("source",), {"help": "synthetic, gutenberg or fineweb-edu"}),
                   (("--sample-chunks",), {"type": int, "default": 4,
                                           "help": "chunks per split read to estimate sizes (default: 4)"}))),
]


class Resolved(SimpleNamespace):
    """The resolved configuration of one command: `cfg.run`, `cfg.model`, ..., and `cfg.args`."""

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {k: dataclasses.asdict(v) for k, v in vars(self).items() if dataclasses.is_dataclass(v)}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_section_flags(parser: argparse.ArgumentParser, cls: type) -> None:
    group = parser.add_argument_group(f"{C.section_name(cls)} options")
    for f in fields(cls):
        helptext = f.metadata.get("help", "")
        kw: dict[str, Any] = {"dest": f"{C.section_name(cls)}.{f.name}", "default": argparse.SUPPRESS}
        if f.type == "bool":
            kw["action"] = argparse.BooleanOptionalAction
            group.add_argument(_flag(f.name), help=f"{helptext} (default: {f.default})", **kw)
            continue
        kw["type"] = {"int": int, "float": float, "str": str}[str(f.type)]
        group.add_argument(_flag(f.name), metavar=str(f.type).upper(),
                           help=f"{helptext} (default: {f.default!r})", **kw)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="picochat", description="Train a small ChatGPT-like model end to end, and talk to it.")
    nouns = parser.add_subparsers(dest="noun", metavar="<command>")
    groups: dict[str, Any] = {}
    for cmd in COMMANDS:
        if len(cmd.words) == 1:
            sub = nouns.add_parser(cmd.words[0], help=cmd.help, description=cmd.help)
        else:
            if cmd.words[0] not in groups:
                noun = nouns.add_parser(cmd.words[0], help=f"{cmd.words[0]} commands")
                groups[cmd.words[0]] = noun.add_subparsers(dest="verb", metavar="<verb>")
            sub = groups[cmd.words[0]].add_parser(cmd.words[1], help=cmd.help, description=cmd.help)
        sub.set_defaults(_command=cmd)
        sub.add_argument("--config", metavar="TOML", help="TOML file overriding the preset (tables: "
                         + ", ".join(f"[{C.section_name(s)}]" for s in cmd.sections) + ")")
        for flags, kw in cmd.extra:
            sub.add_argument(*flags, **kw)
        for section in cmd.sections:
            _add_section_flags(sub, section)
    return parser


def resolve(cmd: Command, ns: argparse.Namespace, toml: dict[str, Any] | None = None) -> Resolved:
    """dataclass defaults < preset < --config TOML (or the given tables) < flags."""
    given = {k: v for k, v in vars(ns).items() if "." in k}
    preset = C.get_preset(given.get("run.preset", "demo"))
    sections = {C.section_name(cls): C.preset_section(preset, cls, cmd.stage) for cls in cmd.sections}
    path = getattr(ns, "config", None)
    if path:
        C.apply_tables(sections, C.load_toml(path), path, only_known=cmd.shares_config)
    if toml:
        C.apply_tables(sections, toml, "the speedrun config", only_known=True)
    for key, value in given.items():
        section, name = key.split(".", 1)
        setattr(sections[section], name, value)
    train = sections.get("train")
    if train is not None and cmd.stage != "base" and train.total_batch_tokens <= 0:
        raise C.ConfigError(f"--total-batch-tokens must be positive for the {cmd.stage} stage; only the base "
                            "stage derives its batch from the horizon (0)")
    if "run" in sections and not sections["run"].run:
        sections["run"].run = sections["run"].preset
    extra = {k: v for k, v in vars(ns).items() if "." not in k and not k.startswith("_")}
    return Resolved(**sections, args=argparse.Namespace(**extra))


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    argv = sys.argv[1:] if argv is None else argv
    # torchrun would take `--run` for its own `--run-path`; `torchrun ... -m picochat -- train base
    # --run R` keeps our flags away from it, so a leading `--` is dropped here.
    ns = parser.parse_args(argv[1:] if argv[:1] == ["--"] else argv)
    cmd: Command | None = getattr(ns, "_command", None)
    if cmd is None:
        parser.print_help()
        sys.exit(2)
    module, func = cmd.target.split(":")
    try:
        cfg = resolve(cmd, ns)
        result = getattr(importlib.import_module(module), func)(cfg)
    except UserError as e:
        print(f"picochat: error: {e}", file=sys.stderr)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        print("\npicochat: interrupted; run the same command again to resume.", file=sys.stderr)
        sys.exit(130)
    code = result if isinstance(result, int) else 0
    if "torch.distributed" in sys.modules:  # a command that may have joined a torchrun group
        from picochat.common.device import close_distributed
        close_distributed(code)
    sys.exit(code)

