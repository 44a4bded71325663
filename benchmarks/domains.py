"""Held-out text of other kinds than the training books, for scoring how well quality transfers.

The pretraining benchmarks (quality.py, quality_ablations.py) train on Gutenberg books and score on
held-out Gutenberg books ("in domain"). A user trains on one corpus and then asks about everything
else, so every final model is also scored on text of clearly different kinds, all from the dataset
mirror (../shared/data; SOURCES.md there gives each file's origin, license and checksum):

  wikitext2     encyclopedic prose: WikiText-2's test articles (Merity et al. 2016, arXiv:1609.07843),
                Wikipedia Good and Featured articles; its tokenizer's " @-@ " number splits undone
                and "= Heading =" lines dropped.
  chitchat      casual modern dialogue: BYU's Chit-Chat conversations, one conversation per
                document, its turns on alternating lines.
  humaneval     source code: OpenAI's HumanEval (Chen et al. 2021, arXiv:2107.03374), each problem's
                prompt, reference solution and unit tests as one Python file.
  gsm8k         arithmetic word problems with worked solutions: GSM8K's test split (Cobbe et al.
                2021, arXiv:2110.14168), question then answer, its <<a*b=c>> calculator notes removed.
  shakespeare   verse drama: Tiny Shakespeare (Karpathy's char-rnn corpus). The nearest of the five
                (Gutenberg-era English; one training book retells Shakespeare), kept as a yardstick.

Three more sets check a choice made by looking at the five (issue #26: a choice tuned on some
sets must also win on sets it was not tuned on). quality.py does not score them; ood_tokens.py
does with `--sets confirm`:

  hh_rlhf       assistant dialogue: Anthropic's HH-RLHF harmless-base test transcripts (Bai et al.
                2022, arXiv:2204.05862), the "chosen" side, "Human:" / "Assistant:" turns.
  mmlu          exam questions of 57 subjects: MMLU's test split (Hendrycks et al. 2021,
                arXiv:2009.03300), the question, its four lettered choices and the answer.
  arc           grade-school science questions: ARC-Easy and ARC-Challenge test (Clark et al. 2018,
                arXiv:1803.05457), in the same question, choices, answer layout.

Every set is cut into documents of at most 1,000 characters (as the in-domain passages are),
its paragraphs kept whole where they fit, and capped at `max_chars` characters in file order, so a
set is the same list of documents on every machine. Each document is scored alone from BOS.
"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

OUT_OF_DOMAIN = ("wikitext2", "chitchat", "humaneval", "gsm8k", "shakespeare")
CONFIRMATION = ("hh_rlhf", "mmlu", "arc")
KINDS = {"wikitext2": "encyclopedic prose", "chitchat": "casual dialogue", "humaneval": "Python source code",
         "gsm8k": "math word problems", "shakespeare": "verse drama (near domain)",
         "hh_rlhf": "assistant dialogue", "mmlu": "exam questions, 57 subjects", "arc": "science exam questions"}
MAX_DOC_CHARS = 1000


def passages(paragraphs: list[str], max_chars: int = MAX_DOC_CHARS) -> list[str]:
    """Consecutive paragraphs joined (by a blank line) into documents of at most max_chars; a
    paragraph longer than that is cut."""
    docs, cur = [], ""
    for para in (p.strip("\n")[:max_chars] for p in paragraphs if p.strip()):
        if cur and len(cur) + 2 + len(para) > max_chars:
            docs.append(cur)
            cur = ""
        cur = f"{cur}\n\n{para}" if cur else para
    return docs + ([cur] if cur else [])


def _jsonl(path: Path) -> list[dict | list]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def detokenize_wikitext(line: str) -> str:
    """Undo WikiText's word tokenization (" @-@ " number splits, spaces around punctuation), the way
    the common evaluation harnesses do, so the text reads as prose. Its <unk> words stay: the
    original words are not in the file."""
    for split, joined in ((" @-@ ", "-"), (" @,@ ", ","), (" @.@ ", ".")):
        line = line.replace(split, joined)
    line = re.sub(r" ([.,;:!?%)\]])", r"\1", line)       # "word , word" -> "word, word"
    line = re.sub(r"([(\[$]) ", r"\1", line)              # "( word" -> "(word"
    line = re.sub(r" (n't|'t|'s|'re|'ve|'ll|'d|'m)\b", r"\1", line)
    return re.sub(r'" ([^"]*?) "', r'"\1"', line)         # '" quoted "' -> '"quoted"'


def _wikitext2(mirror: Path) -> list[list[str]]:
    raw = (mirror / "wikitext2" / "wiki.test.tokens").read_text(encoding="utf-8")
    return [[detokenize_wikitext(line.strip()) for line in raw.splitlines()
             if line.strip() and not line.strip().startswith("=")]]


def _chitchat(mirror: Path) -> list[list[str]]:
    # one conversation = one source of paragraphs; a long one is split at turn boundaries
    return [[turn["content"].strip() for turn in conv] for conv in _jsonl(mirror / "chat" / "chitchat.jsonl.gz")]


def _humaneval(mirror: Path) -> list[list[str]]:
    # a Python file's blank lines separate its paragraphs (functions, the test block)
    files = [p["prompt"] + p["canonical_solution"] + p["test"] for p in
             _jsonl(mirror / "humaneval" / "HumanEval.jsonl.gz")]
    return [re.split(r"\n\s*\n", f) for f in files]


def _gsm8k(mirror: Path) -> list[list[str]]:
    return [[p["question"], re.sub(r"<<[^>]*>>", "", p["answer"])] for p in _jsonl(mirror / "gsm8k" / "test.jsonl")]


def _shakespeare(mirror: Path) -> list[list[str]]:
    return [(mirror / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8").split("\n\n")]


def _lettered(question: str, choices: list[str], answer: int) -> str:
    """An exam question as a test paper prints it: the question, lettered choices, the answer."""
    letters = "ABCDEFGH"
    lines = [question.strip()] + [f"{letters[i]}. {c.strip()}" for i, c in enumerate(choices)]
    return "\n".join(lines + [f"Answer: {letters[answer]}"])


def _hh_rlhf(mirror: Path) -> list[list[str]]:
    # one transcript per source; its turns are blank-line paragraphs already
    return [t["chosen"].strip().split("\n\n") for t in _jsonl(mirror / "chat" / "hh_rlhf_harmless_base_test.jsonl.gz")]


def _mmlu(mirror: Path) -> list[list[str]]:
    # the file runs subject by subject; round-robin over the subjects so a capped set holds all 57
    by_subject: dict[str, list[str]] = {}
    for q in _jsonl(mirror / "mmlu" / "test.jsonl.gz"):
        by_subject.setdefault(q["subject"], []).append(_lettered(q["question"], q["choices"], q["answer"]))
    return [[qs[i] for i in range(max(map(len, by_subject.values()))) for qs in by_subject.values() if i < len(qs)]]


def _arc(mirror: Path) -> list[list[str]]:
    qs = [q for name in ("ARC-Easy-Test.jsonl", "ARC-Challenge-Test.jsonl") for q in _jsonl(mirror / "arc" / name)]
    return [[_lettered(q["question"], q["choices"]["text"], q["choices"]["label"].index(q["answerKey"]))
             for q in qs]]


SOURCES = {"wikitext2": _wikitext2, "chitchat": _chitchat, "humaneval": _humaneval, "gsm8k": _gsm8k,
           "shakespeare": _shakespeare, "hh_rlhf": _hh_rlhf, "mmlu": _mmlu, "arc": _arc}
JOINERS = {"chitchat": "\n"}  # dialogue turns go on consecutive lines, not blank-line paragraphs


def cap(docs: list[str], max_chars: int) -> list[str]:
    """The first documents, at most max_chars characters in all."""
    out, total = [], 0
    for doc in docs:
        if total + len(doc) > max_chars:
            break
        out.append(doc)
        total += len(doc)
    return out


def documents(mirror: str | Path, name: str, max_chars: int = 200_000) -> list[str]:
    """The set's documents (each <= 1,000 characters), at most max_chars characters in all."""
    if name not in SOURCES:
        raise ValueError(f"unknown held-out set {name!r}; choose from {', '.join(SOURCES)}")
    docs = [doc.replace("\n\n", JOINERS[name]) if name in JOINERS else doc
            for group in SOURCES[name](Path(mirror)) for doc in passages(group)]
    return cap(docs, max_chars)
