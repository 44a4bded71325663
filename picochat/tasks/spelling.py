"""Spelling tasks from an English word list: they teach a model to see the letters in its tokens.

A BPE model sees "strawberry" as one or two tokens, so "how many r's are in strawberry?" is hard
for it: the letters are not in its input. SpellingBee teaches a two-step habit: spell the word
out letter by letter (one token per letter), count by hand, then check with the `python` tool
(`'strawberry'.count('r')`). SimpleSpelling drills the first step alone. nanochat trains the
same two skills during mid-training and SFT.

Examples are generated on demand: example i of a split is a pure function of (split, i), so the
tasks are deterministic and as large as asked. Words are split into train and test by a hash of
the word (one in ten held out), so test words are never seen in training.

Word list: dwyl/english-words' words_alpha.txt (CRLF line endings), or shared/data's gzip of it
(words/words_alpha.txt.gz, LF): one lowercase word a line.
"""

from __future__ import annotations

import functools
import gzip
import zlib
from pathlib import Path

from picochat.common.errors import UserError
from picochat.tasks.common import GeneratedTask, extract_final_number, resolve_split_files, same_number

HOLDOUT_MOD = 10


@functools.lru_cache(maxsize=4)
def _load_words(path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(train words, test words) of a word-list file; test = crc32(word) % 10 == 0."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            words = [w.strip() for w in f]
    except (OSError, UnicodeDecodeError, EOFError) as e:
        raise UserError(f"cannot read the word list {path} ({e}); re-download it or check the mirror") from e
    words = [w for w in words if w.isalpha() and w.isascii()]
    test = tuple(w for w in words if zlib.crc32(w.encode()) % HOLDOUT_MOD == 0)
    train = tuple(w for w in words if zlib.crc32(w.encode()) % HOLDOUT_MOD != 0)
    return train, test


class _WordTask(GeneratedTask):
    def __init__(self, split: str = "train", size: int = 10_000, path: str | Path | None = None, *,
                 seed: int = 0, max_len: int = 16, home: str = "", mirror: str = ""):
        super().__init__(split, size, seed)
        [source] = resolve_split_files("words", "all", path, home=home, mirror=mirror)
        train, test = _load_words(str(source))
        # long words are rare and hard to read back letter by letter for a small model
        self.words = [w for w in (train if split == "train" else test) if 2 <= len(w) <= max_len]
        if not self.words:
            raise UserError(f"the word list {source} has no usable {split} words")


def _letter_walk(word: str, letter: str) -> str:
    """'1 s\\n2 t\\n3 r = 1\\n...' : each letter on its own line, with the running count at hits."""
    lines, count = [], 0
    for k, ch in enumerate(word, 1):
        if ch == letter:
            count += 1
            lines.append(f"{k} {ch} = {count}")
        else:
            lines.append(f"{k} {ch}")
    return "\n".join(lines)


_BEE_QUESTIONS = (
    "How many {l} are in {w}?",
    "How many times does the letter {l} appear in the word {w}?",
    "Count the letter '{l}' in '{w}'.",
    "how many {l}s are there in {w}",
    "In the word \"{w}\", how many times does \"{l}\" occur?",
    "Number of '{l}' in {w}?",
    "Can you count the {l}'s in the word {w} for me?",
    "{w}: how many {l}?",
)


class SpellingBee(_WordTask):
    """Count a letter in a word: spell it out, count by hand, confirm with Python, answer after ####."""

    name = "spellingbee"

    def __getitem__(self, i: int) -> dict:
        rng = self._rng(i)
        word = rng.choice(self.words)
        # mostly a letter of the word; sometimes one that is absent, so "0" is a possible answer
        letter = rng.choice(word) if rng.random() < 0.9 else rng.choice("abcdefghijklmnopqrstuvwxyz")
        question = rng.choice(_BEE_QUESTIONS).format(l=letter, w=word)
        if rng.random() < 0.3:
            question = question.capitalize() if rng.random() < 0.5 else question.lower()
        n = word.count(letter)
        parts = [
            {"type": "text", "text": f"Let me spell '{word}' one letter at a time and count the '{letter}'s.\n\n"
                                     f"{_letter_walk(word, letter)}\n\n"
                                     f"Counting by hand gives {n}. Let me check with Python.\n\n"},
            {"type": "python", "text": f"'{word}'.count('{letter}')"},
            {"type": "python_output", "text": str(n)},
            {"type": "text", "text": f"\n\nPython agrees: '{letter}' appears {n} time{'s' if n != 1 else ''} "
                                     f"in '{word}'.\n\n#### {n}"},
        ]
        messages = [{"role": "user", "content": question}, {"role": "assistant", "content": parts}]
        return {"messages": messages, "word": word, "letter": letter, "answer": str(n)}

    def evaluate(self, example: dict, reply: str) -> bool:
        return same_number(extract_final_number(reply), example["answer"])


_SPELL_QUESTIONS = (
    "Spell the word: {w}",
    "How do you spell {w}?",
    "spell {w}",
    "Please spell out \"{w}\" letter by letter.",
    "What are the letters of {w}?",
)


def spelled(word: str) -> str:
    """'apple' -> 'a-p-p-l-e' (a separator between letters makes each letter its own token)."""
    return "-".join(word)


class SimpleSpelling(_WordTask):
    """Spell a word letter by letter; a reply is correct when it contains the exact spelling."""

    name = "simplespelling"

    def __getitem__(self, i: int) -> dict:
        rng = self._rng(i)
        word = rng.choice(self.words)
        messages = [
            {"role": "user", "content": rng.choice(_SPELL_QUESTIONS).format(w=word)},
            {"role": "assistant", "content": f"{word} is spelled {spelled(word)}"},
        ]
        return {"messages": messages, "word": word, "answer": spelled(word)}

    def evaluate(self, example: dict, reply: str) -> bool:
        return example["answer"] in reply
