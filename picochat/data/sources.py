"""Named data sources: where each lives, its license and size, and how to read its documents.

Two halves:
- `REGISTRY`: name -> `Source` (URL pattern or per-file URLs, checksums, license, size, and the
  folder it occupies in a mirror; the mirror layout is the one of ../shared/data).
- corpora: a pretraining source is read as a list of *chunks* (a batch of documents that can be
  re-read on its own: a parquet row group, 64 synthetic documents, 64 Gutenberg passages).
  Chunks are what the loader shards across ranks and what its resume cursor points into.

`iter_documents(source, split)` walks one split's chunks in order and yields the text of each
document; the tokenizer trainer and the loader both read through it (or `open_corpus`).
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass, field
from pathlib import Path

from picochat.common.errors import UserError
from picochat.common.paths import data_dir, mirror_location
from picochat.data.formats import INT, STRING, BundleZip, Format, Jsonl, Lines, Parquet, list_of, struct

SPLITS = ("train", "val")


@dataclass(frozen=True)
class FileSpec:
    """One file of a source. `url` serves exactly these bytes (None: only a mirror has them).

    `format` is checked on every copy handed out (see formats.py); `unpack_to` names the folder of
    the data dir an archive is unpacked into (download.fetch_unpacked)."""

    url: str | None
    sha256: str | None = None
    note: str = ""
    format: Format | None = None
    unpack_to: str = ""


@dataclass(frozen=True)
class Source:
    name: str
    kind: str  # "pretrain", "task" or "eval"
    description: str
    license: str
    size: str
    mirror_dir: str  # folder of this source inside a mirror / data_dir
    files: dict[str, FileSpec] = field(default_factory=dict)
    # split name -> alternative file sets, in order of preference: a task reads the first set
    # that is present (a mirror's converted files, or the publisher's), else downloads the first
    # set that some place (mirror or URL) serves
    splits: dict[str, tuple[tuple[str, ...], ...]] = field(default_factory=dict)
    url_pattern: str = ""  # sharded sources: format string with {index}
    shard_pattern: str = ""  # file name of shard {index}
    num_shards: int = 0  # sharded sources: the last shard is the validation split
    shard_format: Format | None = None
    text_column: str = "text"

    def shard_file(self, index: int) -> str:
        if not 0 <= index < self.num_shards:
            raise UserError(f"shard {index} is out of range for {self.name} (0..{self.num_shards - 1})")
        return self.shard_pattern.format(index=index)

    def is_shard(self, file: str) -> bool:
        return bool(self.num_shards) and re.fullmatch(r"shard_\d{5}\.parquet", file) is not None

    def url_for(self, file: str) -> str | None:
        if file in self.files:
            return self.files[file].url
        if self.url_pattern and self.is_shard(file):
            return self.url_pattern.format(index=int(file[6:11]))
        return None

    def format_for(self, file: str) -> Format | None:
        if file in self.files:
            return self.files[file].format
        return self.shard_format if self.is_shard(file) else None

    def split_files(self, split: str) -> tuple[tuple[str, ...], ...]:
        if split not in self.splits:
            raise UserError(f"{self.name} has no split '{split}'; its splits are {', '.join(self.splits)}")
        return self.splits[split]


# sha256 of each file as mirrored in ../shared/data (see its SHA256SUMS)
_SHA256 = {
    "gutenberg_train": "29c8776dd5bcae0cebc6c6032fa24339152fe5a4fdc12c036d6fd933809fa4b6",
    "gutenberg_val": "61690bbff5cac69cf8b680a91031e5845d0ad7b5a6c19cd5ed126fb2f63f4d8a",
    "gsm8k_train": "17f347dc51477c50d4efb83959dbb7c56297aba886e5544ee2aaed3024813465",
    "gsm8k_test": "3730d312f6e3440559ace48831e51066acaca737f6eabec99bccb9e4b3c39d14",
    "mmlu_test": "2b6dcf30c239c75801e74306e300d607004b14724c9effc4d908d84f3702b0be",
    "arc_easy": "7922d1830d0cd222913e25f29b8db69e52971ff4978f7836050a7d1d2060f53a",
    "arc_challenge": "2ec4149dc9d0e38f44ea4d59dd5b3cf316d8f6a92c5713c6234c3137241f143b",
    "humaneval": "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
    "words_gz": "9e7b0029eea1fef4e2036225c888e9a63b22b79e1e373f04c4f6a060644e2a17",
    "chitchat": "a56196426b9e0c79687798218c1aded8f932bf1a6128ab83d15e3af88786c29c",
}

_GH = "https://raw.githubusercontent.com"
_HF = "https://huggingface.co/datasets"
# Hugging Face serves each file's sha256 only through its API (the LFS pointer), which cannot be
# read offline; files fetched from there are checked by size and format, not by checksum.
_NO_SHA = "no publisher checksum recorded (size and format are checked)"
# nanochat's pretraining copies, both shuffled and re-sharded into parquet files of ~250M
# characters in row groups of 1024 documents (text column "text"; nanochat's
# dev/repackage_data_reference.py): FineWeb-Edu's 100B-token sample, and since 2026 ClimbMix-400B,
# which nanochat switched to because it scores higher on CORE at equal tokens.
FINEWEB_URL = f"{_HF}/karpathy/fineweb-edu-100b-shuffle/resolve/main/shard_{{index:05d}}.parquet"
CLIMBMIX_URL = f"{_HF}/karpathy/climbmix-400b-shuffle/resolve/main/shard_{{index:05d}}.parquet"
TEXT_SHARD = Parquet(({"text": STRING},))

_MMLU_ROW = {"question": STRING, "subject": STRING, "choices": list_of(STRING), "answer": INT}
# cais/mmlu's auxiliary_train once had each row wrapped in a struct column "train"; accept both
MMLU_PARQUET = Parquet((_MMLU_ROW, {"train": struct(**_MMLU_ROW)}))
MMLU_SPLITS = ("test", "validation", "dev", "auxiliary_train")
ARC_PARQUET = Parquet(({"id": STRING, "question": STRING, "answerKey": STRING,
                        "choices": struct(text=list_of(STRING), label=list_of(STRING))},))
ARC_SUBSETS, ARC_SPLITS = ("ARC-Easy", "ARC-Challenge"), ("train", "validation", "test")
SMOLTALK_PARQUET = Parquet(({"messages": list_of(struct(content=STRING, role=STRING))},))
# smol-smoltalk's published files (460K train / 24K test conversations)
SMOLTALK_FILES = {"train": [f"data/train-{i:05d}-of-00004.parquet" for i in range(4)],
                  "test": ["data/test-00000-of-00001.parquet"]}
CORE_ZIP = BundleZip(root="eval_bundle", required=("core.yaml", "eval_meta_data.csv"), index="core.yaml",
                     list_key="icl_tasks", uri_key="dataset_uri", data_dir="eval_data")
CORE_BUNDLE_DIR = "core_icl"  # the unpacked bundle, in the data dir (and in a mirror folder)


def _hf(repo: str, path: str, fmt: Format) -> FileSpec:
    return FileSpec(f"{_HF}/{repo}/resolve/main/{path}", None, _NO_SHA, fmt)


def _one(*files: str) -> tuple[tuple[str, ...], ...]:
    """Alternatives of one file each."""
    return tuple((f,) for f in files)


def _arc_sources() -> tuple[dict[str, FileSpec], dict[str, tuple[tuple[str, ...], ...]]]:
    files, splits = {}, {}
    for subset in ARC_SUBSETS:
        mirror_name = f"{subset}-Test.jsonl"  # ../shared/data's converted test split
        files[mirror_name] = FileSpec(None, _SHA256["arc_" + subset.split("-")[1].lower()],
                                      "mirror only: converted from llm-foundry's copy of the test split",
                                      Jsonl(("question", "choices", "answerKey")))
        for split in ARC_SPLITS:
            path = f"{subset}/{split}-00000-of-00001.parquet"
            files[path] = _hf("allenai/ai2_arc", path, ARC_PARQUET)
            splits[f"{subset}/{split}"] = _one(mirror_name, path) if split == "test" else _one(path)
    return files, splits


_ARC_FILES, _ARC_SPLITS = _arc_sources()
_MMLU_JSONL = FileSpec(None, _SHA256["mmlu_test"], "mirror only: converted from "
                       "https://people.eecs.berkeley.edu/~hendrycks/data.tar",
                       Jsonl(("question", "choices", "answer", "subject")))

REGISTRY: dict[str, Source] = {s.name: s for s in [
    Source("synthetic", "pretrain", "embedded generated corpus about a small invented world (data/synthetic.py)",
           "MIT (generated by picochat)", "unbounded; ~700 chars per document, ~30 MB/s to generate", ""),
    Source("gutenberg", "pretrain", "163 + 5 public-domain English books, cut into passages of <= ~1000 chars",
           "public domain (US)", "~53 MB train, ~1.8 MB val of UTF-8 text", "pretrain",
           files={"gutenberg_train.jsonl.gz": FileSpec(None, _SHA256["gutenberg_train"],
                                                         "mirror only (picked from rcdm-uga/Gutenberg_Text)",
                                                         Jsonl(("text",))),
                  "gutenberg_val.jsonl.gz": FileSpec(None, _SHA256["gutenberg_val"], "mirror only",
                                                       Jsonl(("text",)))},
           splits={"train": _one("gutenberg_train.jsonl.gz"), "val": _one("gutenberg_val.jsonl.gz")}),
    Source("climbmix", "pretrain", "NVIDIA ClimbMix-400B, shuffled (karpathy/climbmix-400b-shuffle): nanochat's "
           "pretraining data; the last shard is the validation split",
           "CC BY-NC 4.0 (NVIDIA: research and development only)",
           "6543 shards x ~250M chars (~100 MB parquet each)", "climbmix", url_pattern=CLIMBMIX_URL,
           shard_pattern="shard_{index:05d}.parquet", num_shards=6543, shard_format=TEXT_SHARD),
    Source("fineweb-edu", "pretrain", "FineWeb-Edu 100BT sample, shuffled (karpathy/fineweb-edu-100b-shuffle); "
           "the last shard is the validation split", "ODC-By 1.0", "1823 shards x ~100 MB (~0.25B chars each)",
           "fineweb-edu", url_pattern=FINEWEB_URL, shard_pattern="shard_{index:05d}.parquet", num_shards=1823,
           shard_format=TEXT_SHARD),
    Source("gsm8k", "task", "grade-school math word problems; answer after '####'", "MIT", "7473 train / 1319 test",
           "gsm8k", files={
               f"{split}.jsonl": FileSpec(f"{_GH}/openai/grade-school-math/master/grade_school_math/data/{split}.jsonl",
                                          _SHA256[f"gsm8k_{split}"], format=Jsonl(("question", "answer")))
               for split in ("train", "test")},
           splits={"train": _one("train.jsonl"), "test": _one("test.jsonl")}),
    Source("mmlu", "task", "57-subject multiple choice (cais/mmlu, config 'all'), {question, subject, choices, "
           "answer}; auxiliary_train is ~100K questions from other exams", "MIT",
           "14042 test / 1531 validation / 285 dev / 99842 auxiliary_train (~50 MB)", "mmlu",
           files={"test.jsonl.gz": _MMLU_JSONL,
                  **{f"all/{s}-00000-of-00001.parquet": _hf("cais/mmlu", f"all/{s}-00000-of-00001.parquet",
                                                            MMLU_PARQUET) for s in MMLU_SPLITS}},
           splits={s: _one(*(["test.jsonl.gz"] if s == "test" else []), f"all/{s}-00000-of-00001.parquet")
                   for s in MMLU_SPLITS}),
    Source("arc", "task", "AI2 Reasoning Challenge (allenai/ai2_arc), Easy and Challenge: train, validation, test",
           "CC BY-SA 4.0", "Easy 2251/570/2376, Challenge 1119/299/1172 questions", "arc",
           files=_ARC_FILES, splits=_ARC_SPLITS),
    Source("humaneval", "task", "164 Python function-completion problems with tests", "MIT", "164 problems",
           "humaneval", files={
               "HumanEval.jsonl.gz": FileSpec(f"{_GH}/openai/human-eval/master/data/HumanEval.jsonl.gz",
                                              _SHA256["humaneval"], format=Jsonl(
                                                  ("task_id", "prompt", "canonical_solution", "test",
                                                   "entry_point")))},
           splits={"test": _one("HumanEval.jsonl.gz")}),
    Source("words", "task", "370k lowercase English words (dwyl/english-words; spelling tasks)", "Unlicense",
           "370098 words (~4 MB)", "words", files={
               "words_alpha.txt.gz": FileSpec(None, _SHA256["words_gz"],
                                              "mirror only: gzip of words_alpha.txt with LF endings",
                                              Lines("[a-z]+")),
               "words_alpha.txt": FileSpec(f"{_GH}/dwyl/english-words/master/words_alpha.txt", None,
                                           "upstream original (CRLF line endings); " + _NO_SHA,
                                           Lines("[a-z]+"))},
           splits={"all": _one("words_alpha.txt.gz", "words_alpha.txt")}),
    Source("smoltalk", "task", "HuggingFaceTB/smol-smoltalk: chat conversations for small models "
           "(parquet, 'messages' column of {content, role})", "Apache-2.0",
           "460K train / 24K test conversations (~1 GB)", "smoltalk",
           files={f: _hf("HuggingFaceTB/smol-smoltalk", f, SMOLTALK_PARQUET) for fs in SMOLTALK_FILES.values()
                  for f in fs},
           splits={split: (tuple(fs),) for split, fs in SMOLTALK_FILES.items()}),
    Source("chitchat", "task", "Chit-Chat Challenge conversations as [{role, content}] lists", "MIT",
           "4017 conversations", "chat", files={
               "chitchat.jsonl.gz": FileSpec(None, _SHA256["chitchat"],
                                             "mirror only: converted from PyPI chitchat-dataset==0.9.0",
                                             Jsonl(row_type="list"))},
           splits={"all": _one("chitchat.jsonl.gz")}),
    Source("core", "eval", "CORE eval bundle as nanochat downloads it: core.yaml, eval_meta_data.csv and the 22 "
           "in-context-learning task files (DCLM / llm-foundry), unpacked into <data>/core_icl",
           "per task (MIT, Apache-2.0, CC BY(-SA), research-only clues); see shared/data SOURCES.md",
           "one zip, ~85K examples in 22 JSONL files", "core", files={
               "eval_bundle.zip": FileSpec("https://karpathy-public.s3.us-west-2.amazonaws.com/eval_bundle.zip",
                                           None, _NO_SHA.replace("publisher", "published"), CORE_ZIP,
                                           unpack_to=CORE_BUNDLE_DIR)},
           splits={"bundle": _one("eval_bundle.zip")}),
]}


def pretrain_sources() -> list[str]:
    return [s.name for s in REGISTRY.values() if s.kind == "pretrain"]


def get_source(name: str) -> Source:
    if name not in REGISTRY:
        close = difflib.get_close_matches(name, list(REGISTRY), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UserError(f"unknown data source '{name}'{hint}; `picochat data list` shows the sources")
    return REGISTRY[name]


def local_folders(src: Source, home: str = "", mirror: str = "") -> list[Path]:
    """Where a source's files may already be: the mirror folder (if --mirror is a folder), then the data dir."""
    folders = [data_dir(home) / src.mirror_dir]
    mirror = mirror_location(mirror)
    if mirror and "://" not in mirror:
        folders.insert(0, Path(mirror) / src.mirror_dir)
    return folders
