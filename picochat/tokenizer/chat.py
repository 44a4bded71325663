"""Conversations to token ids and back. The only place in picochat that does this.

A conversation is a list of messages `{"role": ..., "content": ...}`:
- an optional first "system" message (string), merged into the first user message as
  "system text\\n\\nuser text" (the model has no system turn; nanochat does the same);
- then "user" and "assistant" turns alternating, starting with "user";
- user content is a string (or a list of `{"type": "text", "text": str}` parts, joined);
  assistant content is a string or a list of parts
  `{"type": "text" | "python" | "python_output", "text": str}`: a python part is a tool call the
  assistant writes, and a python_output part (which must directly follow a python part) is the
  result the tool returned.

Rendered, with the loss mask (1 = the model is trained to write this token) under each piece:

    <|bos|> <|user_start|> ...user... <|user_end|> <|assistant_start|> text <|python_start|> code
       0          0            0           0                0           1           1          1
    <|python_end|> <|output_start|> result <|output_end|> text <|assistant_end|>
          1               0            0         0          1          1

The tool result is masked out: at inference the engine, not the model, writes those tokens
(DESIGN.md, "Chat format"). Message text is encoded as plain text, so a user who types
"<|assistant_end|>" gets ordinary tokens, never the special token.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from picochat.common.errors import UserError

ROLES = ("system", "user", "assistant")
PART_TYPES = ("text", "python", "python_output")


class ConversationError(UserError):
    """A conversation that cannot be rendered; the message says which message is wrong and why."""


class ChatTokens(NamedTuple):
    """The ids of the chat special tokens in one tokenizer: the one registry the renderer, the
    engine's tool-use state machine and the Hugging Face export all read."""

    bos: int
    user_start: int
    user_end: int
    assistant_start: int
    assistant_end: int
    python_start: int
    python_end: int
    output_start: int
    output_end: int

    def stops(self, token: int) -> bool:
        """A sampled <|assistant_end|> or <|bos|> ends the reply."""
        return token == self.assistant_end or token == self.bos


def chat_tokens(tokenizer: Any) -> ChatTokens:
    """Look up the special-token ids the chat format uses (DESIGN.md names them)."""
    return ChatTokens(*(tokenizer.special_id(f"<|{name}|>") for name in ChatTokens._fields))


# ----------------------------------------------------------------------------- validation


def _check_assistant_parts(i: int, parts: list) -> None:
    for j, part in enumerate(parts):
        where = f"message {i} (assistant), part {j}"
        if not isinstance(part, dict) or "type" not in part or "text" not in part:
            raise ConversationError(f"{where} must be a dict with 'type' and 'text', got {part!r:.80}")
        if part["type"] not in PART_TYPES:
            raise ConversationError(f"{where} has unknown type {part['type']!r}; "
                                    f"part types are {', '.join(PART_TYPES)}")
        if not isinstance(part["text"], str):
            raise ConversationError(f"{where} text must be a string, got {type(part['text']).__name__}")
        if part["type"] == "python_output" and (j == 0 or parts[j - 1]["type"] != "python"):
            raise ConversationError(f"{where} is a python_output that does not directly follow a "
                                    "python part; put each tool result right after its call")


def _check_message(i: int, message: Any) -> None:
    if not isinstance(message, dict) or "role" not in message or "content" not in message:
        raise ConversationError(f"message {i} must be a dict with 'role' and 'content', got {message!r:.80}")
    role, content = message["role"], message["content"]
    if role not in ROLES:
        raise ConversationError(f"message {i} has unknown role {role!r}; roles are {', '.join(ROLES)}")
    if role == "assistant" and isinstance(content, list):
        _check_assistant_parts(i, content)
    elif isinstance(content, list):  # user/system: text parts only (as OpenAI-style clients send)
        for j, part in enumerate(content):
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise ConversationError(f"message {i} ({role}), part {j} must be a text part "
                                        f"{{'type': 'text', 'text': str}}, got {part!r:.80}")
    elif not isinstance(content, str):
        kinds = "a string or a list of parts" if role == "assistant" else "a string or a list of text parts"
        raise ConversationError(f"message {i} ({role}) content must be {kinds}, got {type(content).__name__}")


def validate_conversation(conversation: list[dict] | dict, *, prompt: bool = False) -> list[dict]:
    """Check a conversation and return its turns, with a system message merged into the first
    user turn. `conversation` may also be a task example `{"messages": [...]}`. With prompt=True
    the conversation must end with a user turn (it is the history before the assistant's reply).
    Raises ConversationError naming the first problem found. Never modifies its input.
    """
    messages = conversation.get("messages") if isinstance(conversation, dict) else conversation
    if not isinstance(messages, list) or not messages:
        raise ConversationError("a conversation must be a non-empty list of messages, "
                                f"got {'an empty list' if messages == [] else type(messages).__name__}")
    for i, message in enumerate(messages):
        _check_message(i, message)
    turns = [dict(m) for m in messages]
    for turn in turns:
        if turn["role"] != "assistant" and isinstance(turn["content"], list):
            turn["content"] = "".join(part["text"] for part in turn["content"])
    offset = 0
    if turns[0]["role"] == "system":
        if len(turns) < 2 or turns[1]["role"] != "user":
            raise ConversationError("a system message must be followed by a user message")
        turns[1]["content"] = turns[0]["content"] + "\n\n" + turns[1]["content"]
        turns, offset = turns[1:], 1
    for k, turn in enumerate(turns):
        expected = "user" if k % 2 == 0 else "assistant"
        if turn["role"] != expected:
            extra = "; only the first message may be a system message" if turn["role"] == "system" else ""
            raise ConversationError(f"message {k + offset} is from {turn['role']} but should be from "
                                    f"{expected}: turns alternate user, assistant, user, ...{extra}")
    if prompt and turns[-1]["role"] != "user":
        raise ConversationError("a prompt for completion must end with a user message, "
                                "but the last message is from the assistant")
    return turns


# ----------------------------------------------------------------------------- rendering


def _render_turns(tokenizer: Any, turns: list[dict], tok: ChatTokens) -> tuple[list[int], list[int]]:
    ids: list[int] = [tok.bos]
    mask: list[int] = [0]

    def add(tokens: list[int], weight: int) -> None:
        ids.extend(tokens)
        mask.extend([weight] * len(tokens))

    for turn in turns:
        content = turn["content"]
        if turn["role"] == "user":
            add([tok.user_start, *tokenizer.encode(content), tok.user_end], 0)
            continue
        add([tok.assistant_start], 0)
        for part in [{"type": "text", "text": content}] if isinstance(content, str) else content:
            text_ids = tokenizer.encode(part["text"])
            if part["type"] == "text":
                add(text_ids, 1)
            elif part["type"] == "python":
                add([tok.python_start, *text_ids, tok.python_end], 1)
            else:  # python_output: the engine writes these tokens at inference, so no loss
                add([tok.output_start, *text_ids, tok.output_end], 0)
        add([tok.assistant_end], 1)
    return ids, mask


def render_conversation(tokenizer: Any, conversation: list[dict] | dict,
                        max_tokens: int | None = None) -> tuple[list[int], list[int]]:
    """Token ids of a whole conversation and its loss mask (1 exactly on the tokens the assistant
    writes: its text, its python calls with their delimiters, and its <|assistant_end|>).
    `max_tokens` truncates both lists."""
    ids, mask = _render_turns(tokenizer, validate_conversation(conversation), chat_tokens(tokenizer))
    if max_tokens is not None:
        ids, mask = ids[:max_tokens], mask[:max_tokens]
    return ids, mask


def render_for_completion(tokenizer: Any, conversation: list[dict] | dict) -> list[int]:
    """The prompt for the assistant's next reply: the history (ending with a user turn) followed
    by <|assistant_start|>."""
    tok = chat_tokens(tokenizer)
    ids, _ = _render_turns(tokenizer, validate_conversation(conversation, prompt=True), tok)
    return ids + [tok.assistant_start]


def prompt_ids(tokenizer: Any, example: dict) -> list[int]:
    """The prompt of a task example: its conversation without the reference reply, rendered for
    the assistant's turn (ending in <|assistant_start|>)."""
    messages = list(example["messages"])
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    return render_for_completion(tokenizer, messages)


# ----------------------------------------------------------------------------- parsing


def normalize_content(content: str | list[dict]) -> str | list[dict]:
    """The canonical form of assistant content: adjacent text parts joined, empty text parts
    dropped, and a list with no tool parts collapsed to a string (what `parse_reply` returns)."""
    if isinstance(content, str):
        return content
    parts: list[dict] = []
    for part in content:
        if part["type"] == "text" and parts and parts[-1]["type"] == "text":
            parts[-1] = {"type": "text", "text": parts[-1]["text"] + part["text"]}
        elif part["type"] != "text" or part["text"]:
            parts.append({"type": part["type"], "text": part["text"]})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def parse_reply(tokenizer: Any, ids: list[int]) -> dict:
    """Generated assistant ids (the tokens after <|assistant_start|>) back into a message.

    Reading stops at <|assistant_end|>, or at any special token an assistant never writes
    (<|bos|>, <|user_start|>, ...), since a model that emits one has left its turn. A reply cut
    off inside a tool call still returns the partial call, so a caller can see what happened.
    """
    tok = chat_tokens(tokenizer)
    stops = {tok.assistant_end, tok.bos, tok.user_start, tok.user_end, tok.assistant_start}
    opens = {tok.python_start: "python", tok.output_start: "python_output"}
    closes = {tok.python_end: "python", tok.output_end: "python_output"}
    parts: list[dict] = []
    kind, segment = "text", []

    def flush() -> None:
        if segment or kind != "text":
            parts.append({"type": kind, "text": tokenizer.decode(segment)})
        segment.clear()

    for t in ids:
        if t in stops:
            break
        if t in opens:
            flush()
            kind = opens[t]
        elif t in closes:
            if closes[t] == kind:  # a stray closing token outside its segment is dropped
                flush()
                kind = "text"
        else:
            segment.append(t)
    flush()
    return {"role": "assistant", "content": normalize_content(parts)}


def content_text(content: str | list[dict]) -> str:
    """All the text of a message's content, tool calls and outputs included, in order."""
    return content if isinstance(content, str) else "".join(p["text"] for p in content)
