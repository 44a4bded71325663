"""A fake data hub: small files in each registered dataset's exact published format, served over
HTTP on 127.0.0.1, so download, format checks, tasks and CORE run through the code a GPU user runs.

    root = build_fake_hub(tmp_path / "hub")
    with serve_fake_hub(root) as hub:
        ...  # hub.mirror: a URL mirror (`<mirror>/<source folder>/<file>`);
             # hub.url_prefix: for PICOCHAT_URL_PREFIX (the registered URLs, host and path kept)

Formats follow the publishers: parquet with the same columns and Arrow types (ClimbMix/FineWeb
shards in row groups of 1024 documents; smol-smoltalk `messages` list<struct<content, role>>;
cais/mmlu `all/*` flat columns; allenai/ai2_arc `choices` struct), the word list with CRLF line
endings, and nanochat's eval_bundle.zip with core.yaml, eval_meta_data.csv and all 22 CORE task
files (hellaswag, squad, coqa included) under eval_bundle/. GSM8K and HumanEval are pinned by
sha256 in the registry: they are copied from the shared data mirror when it is there (the
publisher's bytes), else written small and their pins replaced while the hub is served.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import hashlib
import io
import json
import os
import random
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from picochat.data import synthetic
from picochat.data.sources import REGISTRY

ROW_GROUP = 1024  # nanochat's repackaged shards: row groups of 1024 documents
MIRROR = Path(os.environ.get("PICOCHAT_MIRROR", "../shared/data"))

# The 22 CORE tasks: label, dataset_uri under eval_data/, type, shots, delimiter, random baseline (%)
CORE_TASKS = [
    ("hellaswag_zeroshot", "language_understanding/hellaswag.jsonl", "multiple_choice", 0, " ", 25),
    ("jeopardy", "world_knowledge/jeopardy_all.jsonl", "language_modeling", 10, "\nAnswer: ", 0),
    ("bigbench_qa_wikidata", "world_knowledge/bigbench_qa_wikidata.jsonl", "language_modeling", 10, " ", 0),
    ("arc_easy", "world_knowledge/arc_easy.jsonl", "multiple_choice", 10, "\nAnswer: ", 25),
    ("arc_challenge", "world_knowledge/arc_challenge.jsonl", "multiple_choice", 10, "\nAnswer: ", 25),
    ("copa", "commonsense_reasoning/copa.jsonl", "multiple_choice", 0, " ", 50),
    ("commonsense_qa", "commonsense_reasoning/commonsense_qa.jsonl", "multiple_choice", 10, " ", 40.3),
    ("piqa", "commonsense_reasoning/piqa.jsonl", "multiple_choice", 10, "\nAnswer: ", 50),
    ("openbook_qa", "commonsense_reasoning/openbook_qa.jsonl", "multiple_choice", 0, " ", 25),
    ("lambada_openai", "language_understanding/lambada_openai.jsonl", "language_modeling", 0, " ", 0),
    ("hellaswag", "language_understanding/hellaswag.jsonl", "multiple_choice", 10, " ", 25),
    ("winograd", "language_understanding/winograd_wsc.jsonl", "schema", 0, " ", 50),
    ("winogrande", "language_understanding/winogrande.jsonl", "schema", 0, " ", 50),
    ("bigbench_dyck_languages", "symbolic_problem_solving/bigbench_dyck_languages.jsonl", "language_modeling",
     10, " ", 0),
    ("agi_eval_lsat_ar", "symbolic_problem_solving/agi_eval_lsat_ar.jsonl", "multiple_choice", 3, " ", 25),
    ("bigbench_cs_algorithms", "symbolic_problem_solving/bigbench_cs_algorithms.jsonl", "language_modeling",
     10, " ", 0),
    ("bigbench_operators", "symbolic_problem_solving/bigbench_operators.jsonl", "language_modeling", 10, " ", 0),
    ("bigbench_repeat_copy_logic", "symbolic_problem_solving/bigbench_repeat_copy_logic.jsonl",
     "language_modeling", 10, " ", 0),
    ("squad", "reading_comprehension/squad.jsonl", "language_modeling", 10, " ", 0),
    ("coqa", "reading_comprehension/coqa.jsonl", "language_modeling", 0, " ", 0),
    ("boolq", "reading_comprehension/boolq.jsonl", "multiple_choice", 10, "\nAnswer: ", 62),
    ("bigbench_language_identification", "language_understanding/bigbench_language_identification.jsonl",
     "multiple_choice", 10, " ", 25),
]


def _parquet(table: pa.Table, **kw) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kw)
    return buf.getvalue()


def _docs(start_chunk: int, n: int) -> list[str]:
    docs: list[str] = []
    chunk = start_chunk
    while len(docs) < n:
        docs += synthetic.chunk("train", chunk)
        chunk += 1
    return docs[:n]


def shard_bytes(index: int, docs: int) -> bytes:
    """One pretraining shard as nanochat repackaged them: column `text`, row groups of 1024, zstd."""
    texts = _docs(index * 97, docs)
    return _parquet(pa.table({"text": pa.array(texts, pa.string())}), row_group_size=ROW_GROUP,
                    compression="zstd", use_dictionary=False, write_statistics=False)


def _mmlu_rows(split: str, n: int) -> list[dict]:
    rng = random.Random(f"mmlu/{split}")
    rows = []
    for _ in range(n):
        a, b = rng.randint(2, 40), rng.randint(2, 40)
        choices = [str(a + b + d) for d in (0, 1, -1, 2)]
        rng.shuffle(choices)
        rows.append({"question": f"What is {a} + {b}?", "subject": "elementary_mathematics",
                     "choices": choices, "answer": choices.index(str(a + b))})
    return rows


def mmlu_bytes(split: str, n: int = 24) -> bytes:
    schema = pa.schema([("question", pa.string()), ("subject", pa.string()),
                        ("choices", pa.list_(pa.string())), ("answer", pa.int64())])
    return _parquet(pa.Table.from_pylist(_mmlu_rows(split, n), schema=schema))


def arc_bytes(subset: str, split: str, n: int = 20) -> bytes:
    rng = random.Random(f"{subset}/{split}")
    rows = []
    for i in range(n):
        k = rng.randint(1, 9)
        labels = list("ABCD") if i % 5 else ["1", "2", "3", "4"]  # some upstream rows use digits
        texts = [f"{k + d} legs" for d in (0, 2, 4, 6)]
        rows.append({"id": f"Mercury_{subset}_{split}_{i}", "question": f"How many legs have {k} birds, halved?",
                     "choices": {"text": texts, "label": labels}, "answerKey": labels[i % 4]})
    schema = pa.schema([("id", pa.string()), ("question", pa.string()),
                        ("choices", pa.struct([("text", pa.list_(pa.string())), ("label", pa.list_(pa.string()))])),
                        ("answerKey", pa.string())])
    return _parquet(pa.Table.from_pylist(rows, schema=schema))


def smoltalk_bytes(shard: int, n: int = 40) -> bytes:
    rows = []
    for i in range(n):
        turns = [{"content": f"Tell me fact {shard}.{i}.", "role": "user"},
                 {"content": f"Fact {shard}.{i}: the river runs past the old mill.", "role": "assistant"}]
        if i % 3 == 0:
            turns.insert(0, {"content": "You are a helpful assistant.", "role": "system"})
        rows.append({"messages": turns, "source": "smol-magpie-ultra"})
    msg = pa.struct([("content", pa.string()), ("role", pa.string())])
    schema = pa.schema([("messages", pa.list_(msg)), ("source", pa.string())])
    return _parquet(pa.Table.from_pylist(rows, schema=schema))


def words_bytes() -> bytes:
    words = sorted({w for d in _docs(0, 200) for w in d.lower().split() if w.isalpha() and w.isascii()})
    return "".join(f"{w}\r\n" for w in words).encode()  # dwyl's words_alpha.txt has CRLF endings


def gsm8k_bytes(split: str, n: int = 30) -> bytes:
    rows = []
    for i in range(n):
        a, b = 3 + i, 4 + 2 * i
        rows.append({"question": f"Ann has {a} apples and buys {b} more. How many apples does she have?",
                     "answer": f"She has {a} + {b} = <<{a}+{b}={a + b}>>{a + b} apples.\n#### {a + b}"})
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def humaneval_bytes(n: int = 4) -> bytes:
    rows = [{"task_id": f"HumanEval/{i}", "prompt": f"def add{i}(x):\n    \"\"\"Add {i} to x.\"\"\"\n",
             "canonical_solution": f"    return x + {i}\n", "entry_point": f"add{i}",
             "test": f"def check(candidate):\n    assert candidate(1) == {1 + i}\n"} for i in range(n)]
    return gzip.compress("".join(json.dumps(r) + "\n" for r in rows).encode(), mtime=0)


def _core_rows(label: str, task_type: str, n: int = 12) -> list[dict]:
    rows = []
    for i in range(n):
        if task_type == "multiple_choice":  # hellaswag-style: a context and four endings
            rows.append({"query": f"{label} item {i}: the cat sat on the", "choices": ["mat", "sky", "idea", "sun"],
                         "gold": 0})
        elif task_type == "schema":  # winograd-style: the options differ in the context
            rows.append({"context_options": [f"The trophy {i} did not fit because it", f"The case {i} was small so it"],
                         "continuation": "was too big.", "gold": 0})
        elif label in ("squad", "coqa"):  # reading comprehension: a passage, a question, a short answer
            rows.append({"context": f"Passage: The mill {i} stands by the river.\nQuestion: What stands by the "
                                    "river?\nAnswer:", "continuation": "The mill", "category": label})
        else:
            rows.append({"context": f"{label} question {i}: two plus two is", "continuation": "four"})
    return rows


def core_bundle_bytes() -> bytes:
    import yaml

    tasks = []
    for label, uri, task_type, shots, delim, _ in CORE_TASKS:
        entry = {"label": label, "dataset_uri": uri, "num_fewshot": [shots], "icl_task_type": task_type}
        if delim != " ":
            entry["continuation_delimiter"] = delim
        tasks.append(entry)
    meta = "Eval Task,Task Category,Task Type,#shots,#datapoints,Random baseline,Centered Metric?,Description\n"
    meta += "".join(f"{label},cat,{t},{s},12,{rb},,\"fake {label}\"\n" for label, _, t, s, _, rb in CORE_TASKS)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("eval_bundle/", "")
        z.writestr("eval_bundle/core.yaml", yaml.safe_dump({"icl_tasks": tasks}, sort_keys=False))
        z.writestr("eval_bundle/eval_meta_data.csv", meta)
        for label, uri, task_type, *_ in {t[1]: t for t in CORE_TASKS}.values():  # hellaswag's file serves two
            rows = _core_rows(label, task_type)
            z.writestr(f"eval_bundle/eval_data/{uri}", "".join(json.dumps(r) + "\n" for r in rows))
    return buf.getvalue()


def published_files(train_shards: int = 3, docs_per_shard: int = 2 * ROW_GROUP + 100) -> dict[tuple[str, str], bytes]:
    """(source, file) -> bytes, for every registered file that has a URL (sharded sources: a few
    training shards and the validation shard)."""
    out: dict[tuple[str, str], bytes] = {}
    for src in REGISTRY.values():
        if src.num_shards:
            for i in [*range(train_shards), src.num_shards - 1]:
                out[(src.name, src.shard_file(i))] = shard_bytes(i, docs_per_shard)
    for split in ("test", "validation", "dev", "auxiliary_train"):
        n = 80 if split == "auxiliary_train" else 24
        out[("mmlu", f"all/{split}-00000-of-00001.parquet")] = mmlu_bytes(split, n)
    for subset in ("ARC-Easy", "ARC-Challenge"):
        for split in ("train", "validation", "test"):
            out[("arc", f"{subset}/{split}-00000-of-00001.parquet")] = arc_bytes(subset, split)
    for f in REGISTRY["smoltalk"].files:
        out[("smoltalk", f)] = smoltalk_bytes(int(f.split("-")[1]) + (10 if "test" in f else 0))
    out[("words", "words_alpha.txt")] = words_bytes()
    out[("core", "eval_bundle.zip")] = core_bundle_bytes()
    for split in ("train", "test"):
        real = MIRROR / "gsm8k" / f"{split}.jsonl"
        out[("gsm8k", f"{split}.jsonl")] = real.read_bytes() if real.is_file() else gsm8k_bytes(split)
    real = MIRROR / "humaneval" / "HumanEval.jsonl.gz"
    out[("humaneval", "HumanEval.jsonl.gz")] = real.read_bytes() if real.is_file() else humaneval_bytes()
    missing = [(s.name, f) for s in REGISTRY.values() for f, spec in s.files.items()
               if spec.url and (s.name, f) not in out]
    assert not missing, f"the fake hub has no file for {missing}"
    return out


def build_fake_hub(root: Path, **kw) -> Path:
    """Write the hub under `root`: `hub/<host>/<path>` (the registered URLs) and `mirror/<source
    folder>/<file>` (the mirror layout), the same bytes in both. Returns `root`."""
    root = Path(root)
    for (name, file), data in published_files(**kw).items():
        src = REGISTRY[name]
        url = src.url_for(file)
        assert url is not None
        for path in (root / "hub" / url.split("://", 1)[1], root / "mirror" / src.mirror_dir / file):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
    return root


class _RangeHandler(SimpleHTTPRequestHandler):
    """Static files with `Range: bytes=N-` (what download.py asks for when it resumes)."""

    requests: list[str]  # set per server: every path asked for, in order

    def log_message(self, *args) -> None:
        pass

    def send_head(self):
        self.requests.append(self.path)
        start = self.headers.get("Range", "")
        path = Path(self.translate_path(self.path))
        if not start.startswith("bytes=") or not path.is_file():
            return super().send_head()
        offset, size = int(start[6:].split("-")[0]), path.stat().st_size
        if offset >= size:
            self.send_error(416)
            return None
        f = open(path, "rb")
        f.seek(offset)
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {offset}-{size - 1}/{size}")
        self.send_header("Content-Length", str(size - offset))
        self.end_headers()
        return f


@dataclass
class FakeHub:
    root: Path
    url: str
    requests: list[str]  # every path asked for, in order

    @property
    def mirror(self) -> str:
        return f"{self.url}/mirror"

    @property
    def url_prefix(self) -> str:
        return f"{self.url}/hub"


def _pin_fake_checksums(root: Path) -> list[tuple[dict, str, object]]:
    """Replace the registry's sha256 of pinned files that the hub had to write itself."""
    undo = []
    for src in REGISTRY.values():
        for file, spec in list(src.files.items()):
            served = root / "mirror" / src.mirror_dir / file
            if spec.url and spec.sha256 and served.is_file():
                sha = hashlib.sha256(served.read_bytes()).hexdigest()
                if sha != spec.sha256:
                    undo.append((src.files, file, spec))
                    src.files[file] = dataclasses.replace(spec, sha256=sha)
    return undo


@contextlib.contextmanager
def serve_fake_hub(root: Path) -> Iterator[FakeHub]:
    """Serve a built hub on 127.0.0.1 (a free port) for the duration of the block."""
    requests: list[str] = []
    handler = type("Handler", (_RangeHandler,), {"requests": requests})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    undo = _pin_fake_checksums(Path(root))
    try:
        yield FakeHub(Path(root), f"http://127.0.0.1:{httpd.server_address[1]}", requests)
    finally:
        for files, file, spec in undo:
            files[file] = spec
        httpd.shutdown()
        httpd.server_close()
