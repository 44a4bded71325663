"""picochat's tokenizer as a Hugging Face `tokenizer.json` (+ tokenizer_config.json with the chat
template), encoding exactly as picochat does.

picochat encodes with tiktoken's rule: split the text with the regex, then inside each chunk
repeatedly join the adjacent pair whose joined bytes form the lowest-ranked token (rank = id),
the leftmost on ties; a chunk that is itself a token is one token. The `tokenizers` BPE model
joins listed merge pairs by their list position, so the same rule is spelled as:
- pre-tokenizer: the same split regex ("Isolated"), then ByteLevel without its own regex (bytes
  to GPT-2's printable characters, which is only a relabelling of the 256 bytes);
- vocab: id -> the bytes of that id, relabelled; special tokens as added tokens, at their ids;
- merges: for every token T, every way of cutting it into two tokens (not only the pair that
  created it: tiktoken joins any pair whose bytes are a token), ordered by T's rank;
- ignore_merges: a whole chunk found in the vocabulary is taken as is (tiktoken's shortcut).
The one thing this cannot spell is a tie between two different cuts of the same T whose pairs
overlap (pieces p, q, r with p+q = q+r = T): tiktoken takes the leftmost, `tokenizers` the cut
listed first. No such case turned up in random merge tables over 2-3 letters, where they are most
likely (tests/test_export_hf.py), and `verify_tokenizer_json` encodes a fixed mixed text plus
every token's own text both ways at export time: one differing id and the export is refused.
"""

from __future__ import annotations

import json
from typing import Any

from picochat.export.hf_model import ExportError
from picochat.tokenizer.chat import chat_tokens
from picochat.tokenizer.tokenizer import Tokenizer


def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table (what the ByteLevel pre-tokenizer emits)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def _merges(tok: Tokenizer, names: list[str], ranks: dict[bytes, int]) -> list[list[str]]:
    merges = []
    for rank in range(256, len(names)):
        token = tok.id_to_bytes(rank)
        if ranks.get(token) != rank:
            continue  # a later id with the same bytes: never produced by encode (see Tokenizer)
        cuts = [(ranks[token[:k]], ranks[token[k:]]) for k in range(1, len(token))
                if token[:k] in ranks and token[k:] in ranks]
        merges += [[names[a], names[b]] for a, b in sorted(cuts)]
    return merges


def tokenizer_json(tok: Tokenizer) -> dict[str, Any]:
    if not tok._complete:
        raise ExportError("two of this tokenizer's ids have the same bytes, and a Hugging Face vocabulary "
                          "maps each string to one id, so the later id could not be decoded; this tokenizer "
                          "cannot be exported faithfully")
    alphabet = _byte_alphabet()
    n = tok.vocab_size - len(tok.special_tokens)
    names = ["".join(alphabet[b] for b in tok.id_to_bytes(i)) for i in range(n)]
    ranks = {tok.id_to_bytes(i): i for i in reversed(range(n))}
    added = [{"id": i, "content": name, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True} for name, i in tok.special_tokens.items()]
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": tok.pattern}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        ]},
        # plain `tokenizer(text)` starts a document with <|bos|>, as picochat's base stage does;
        # apply_chat_template tokenizes without it (its template writes <|bos|> itself)
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": "<|bos|>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": "<|bos|>", "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {"<|bos|>": {"id": "<|bos|>", "ids": [tok.bos_id], "tokens": ["<|bos|>"]}},
        },
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {name: i for i, name in enumerate(names)}, "merges": _merges(tok, names, ranks)},
    }


# The chat format of tokenizer/chat.py as a Jinja template: a system message is merged into the
# first user turn ("system\n\nuser"), assistant content is a string or a list of text / python /
# python_output parts, and the generation prompt is <|assistant_start|>.
CHAT_TEMPLATE = (
    "{%- macro text_of(content) -%}"
    "{%- if content is string -%}{{- content -}}"
    "{%- else -%}{%- for part in content -%}{{- part['text'] -}}{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set system = text_of(messages[0]['content']) + '\\n\\n' -%}{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set system = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "<|bos|>"
    "{%- for message in turns -%}"
    "{%- if message['role'] not in ['user', 'assistant'] or (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{- raise_exception('turns must alternate user, assistant, user, ... (only the first message may be "
    "a system message)') -}}"
    "{%- endif -%}"
    "{%- if message['role'] == 'user' -%}"
    "<|user_start|>{{- (system if loop.first else '') + text_of(message['content']) -}}<|user_end|>"
    "{%- else -%}"
    "<|assistant_start|>"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'text' -%}{{- part['text'] -}}"
    "{%- elif part['type'] == 'python' -%}<|python_start|>{{- part['text'] -}}<|python_end|>"
    "{%- elif part['type'] == 'python_output' -%}<|output_start|>{{- part['text'] -}}<|output_end|>"
    "{%- else -%}{{- raise_exception('assistant parts are text, python or python_output') -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "<|assistant_end|>"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant_start|>{%- endif -%}"
)


def tokenizer_config(tok: Tokenizer, max_length: int) -> dict[str, Any]:
    names = {i: name for name, i in tok.special_tokens.items()}
    ids = chat_tokens(tok)
    return {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "bos_token": names[ids.bos],
        "eos_token": names[ids.assistant_end],
        "pad_token": names[ids.assistant_end],
        "unk_token": None,
        "additional_special_tokens": [names[i] for i in ids[1:] if i != ids.assistant_end],
        "clean_up_tokenization_spaces": False,
        "model_max_length": max_length,
        "chat_template": CHAT_TEMPLATE,
    }


# Mixed text for the round-trip check: scripts, emoji (4-byte UTF-8), digit runs (split in 1-2s),
# whitespace runs (spaces, tabs, newlines, CRLF), contractions, punctuation runs, code.
CHECK_TEXT = (
    "Hello world! It's 2024-05-17, and we've got 12345678 apples... or 3.14159? "
    "Ünïcödé: naïve café, 日本語のテキスト, 한국어, Ελληνικά, русский текст, עברית, العربية, हिन्दी. "
    "Emoji 🙂🚀👩‍👩‍👧 and 🇫🇷!\n\n\n    indented\tline\twith\ttabs   \r\n  trailing   \n"
    "def f(x):\n    return x**2 + 1  # comment\n\n{'a': [1, 2, 3]}  <html>&amp;</html> $$$ ---- ====\n"
    "I'M SHOUTING, you'll SEE, they'd DO   it  ... 000 0.000001 1e-9 ½ ⅓ ① x² ١٢٣\u00a0nbsp\u2009thin"
)


def verify_tokenizer_json(tok: Tokenizer, data: dict[str, Any]) -> None:
    """Encode CHECK_TEXT and every token's own text with both tokenizers; refuse on any difference.
    Needs the `tokenizers` package (it comes with transformers); without it the check is skipped
    and the caller says so."""
    from tokenizers import Tokenizer as HFTokenizer

    hf = HFTokenizer.from_str(json.dumps(data))
    texts = [CHECK_TEXT, CHECK_TEXT * 3]
    n = tok.vocab_size - len(tok.special_tokens)
    pieces = [tok.id_to_bytes(i).decode("utf-8", errors="replace") for i in range(n)]
    texts += pieces + ["".join(pieces[i:i + 50]) for i in range(0, n, 50)]
    got = [e.ids for e in hf.encode_batch(texts, add_special_tokens=False)]
    want = tok.encode_batch(texts)
    for text, a, b in zip(texts, got, want):
        if a != b:
            raise ExportError(f"the Hugging Face tokenizer would encode {text[:40]!r} as {a[:12]}... but picochat "
                              f"as {b[:12]}...; this tokenizer cannot be exported faithfully")
    for name, i in tok.special_tokens.items():
        if hf.encode(name, add_special_tokens=False).ids != [i]:
            raise ExportError(f"the special token {name} does not map to id {i} in the exported tokenizer")
