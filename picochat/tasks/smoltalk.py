"""General conversation data: SmolTalk and Chit-Chat.

SmolTalk (HuggingFaceTB/smol-smoltalk; Allal et al. 2025, arXiv:2502.02737) is published as
parquet shards with a `messages` column: a list of {"content", "role"} with an optional leading
system message, then user/assistant turns (train: data/train-0000{0..3}-of-00004.parquet, test:
data/test-00000-of-00001.parquet). `picochat data download smoltalk` fetches them; a `path`
(one parquet file or a folder of them) reads any file of that layout instead.

Chit-Chat (BYU PCC lab, MIT) is the offline stand-in: shared/data/chat/chitchat.jsonl.gz, one JSON
list of {"role", "content"} per line. It has no published split, so we hold out every 20th
conversation as "test".
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from picochat.common.errors import UserError
from picochat.tasks.common import Task, permutation, resolve_split_files
from picochat.tokenizer.chat import ConversationError, validate_conversation


def _well_formed(messages: list[dict]) -> bool:
    try:
        validate_conversation(messages)
    except ConversationError:
        return False
    return messages[-1]["role"] == "assistant"


class SmolTalk(Task):
    """Training conversations (no scorer). Rows are converted lazily, so a malformed one surfaces
    as a ConversationError when it is rendered, naming what is wrong."""

    name = "smoltalk"
    eval_type = "generative"

    def __init__(self, split: str = "train", path: str | Path | None = None, *, seed: int | None = 42,
                 home: str = "", mirror: str = ""):
        import pyarrow.parquet as pq

        files = resolve_split_files("smoltalk", split, path, home=home, mirror=mirror)
        shards = sorted(files[0].glob("*.parquet")) if files[0].is_dir() else files
        if not shards:
            raise UserError(f"no .parquet shards in {files[0]}; point the SmolTalk path at its parquet files")
        try:
            columns = [pq.read_table(s, columns=["messages"]).column("messages") for s in shards]
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"cannot read SmolTalk parquet {files[0]} ({e}); it needs a 'messages' column") from e
        # Keep the Arrow columns and convert one row at a time: 460k conversations as Python
        # dicts would cost gigabytes, while Arrow holds them compactly.
        self.rows = [(c, i) for c in columns for i in range(len(c))]
        self.order = permutation(len(self.rows), seed)
        self.split = split

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict:
        column, j = self.rows[int(self.order[self._check_index(i)])]
        messages = [{"role": m["role"], "content": m["content"]} for m in column[j].as_py()]
        return {"messages": messages}


class ChitChat(Task):
    """Casual two-person chats; a real (human-written) offline conversation source."""

    name = "chitchat"
    eval_type = "generative"
    HOLDOUT_EVERY = 20

    def __init__(self, split: str = "train", path: str | Path | None = None, *, seed: int | None = 42,
                 home: str = "", mirror: str = ""):
        if split not in ("train", "test"):
            raise ValueError(f"ChitChat split must be train or test, got {split!r}")
        [source] = resolve_split_files("chitchat", "all", path, home=home, mirror=mirror)
        opener = gzip.open if source.suffix == ".gz" else open
        try:
            with opener(source, "rt", encoding="utf-8") as f:
                convs = [json.loads(line) for line in f if line.strip()]
        except (OSError, ValueError, EOFError) as e:
            raise UserError(f"cannot read {source} ({e}); re-download it or check the mirror") from e
        held_out = [k % self.HOLDOUT_EVERY == 0 for k in range(len(convs))]
        keep = [c for c, h in zip(convs, held_out, strict=True) if h == (split == "test")]
        self.conversations = [c for c in keep if _well_formed(c)]
        self.skipped = len(keep) - len(self.conversations)
        self.order = permutation(len(self.conversations), seed)
        self.split = split

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, i: int) -> dict:
        return {"messages": self.conversations[int(self.order[self._check_index(i)])]}
