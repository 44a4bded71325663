"""tokenizer/chat.py: conversation -> (ids, loss mask), prompts for completion, replies -> messages."""

from __future__ import annotations

import warnings

import pytest

from picochat.common.errors import UserError
from picochat.tokenizer.chat import (
    ConversationError,
    chat_tokens,
    content_text,
    normalize_content,
    parse_reply,
    render_conversation,
    render_for_completion,
    validate_conversation,
)
from picochat.tokenizer.tokenizer import Tokenizer

CORPUS = ("The quick brown fox jumps over the lazy dog. How many r are in strawberry? "
          "'strawberry'.count('r') gives 3. 12*7=84 and 48/2=24. Héllo wörld, 你好 🙂. ") * 20


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the native core may be missing: the reference is fine here
        return Tokenizer.train([CORPUS], 400)


U, A = "user", "assistant"

TOOL_CONVERSATION = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "What is 12*7?"},
    {"role": "assistant", "content": [
        {"type": "text", "text": "Let me compute. "},
        {"type": "python", "text": "12*7"},
        {"type": "python_output", "text": "84"},
        {"type": "text", "text": " So it is 84."},
    ]},
    {"role": "user", "content": "And 48/2, twice?"},
    {"role": "assistant", "content": [
        {"type": "python", "text": "48/2"},
        {"type": "python_output", "text": "24.0"},
        {"type": "python", "text": "24*2"},
        {"type": "python_output", "text": "48"},
        {"type": "text", "text": "#### 48"},
    ]},
    {"role": "user", "content": "Thanks <|assistant_end|>"},
    {"role": "assistant", "content": "You're welcome."},
]


def expected_render(tok: Tokenizer, conversation: list[dict]) -> tuple[list[int], list[int]]:
    """An independent spelling-out of the format, piece by piece, with who writes each piece."""
    t = chat_tokens(tok)
    pieces: list[tuple[list[int], int]] = [([t.bos], 0)]
    messages = conversation
    if messages[0]["role"] == "system":
        merged = {"role": "user", "content": messages[0]["content"] + "\n\n" + messages[1]["content"]}
        messages = [merged] + messages[2:]
    for m in messages:
        if m["role"] == "user":
            pieces += [([t.user_start], 0), (tok.encode(m["content"]), 0), ([t.user_end], 0)]
            continue
        pieces.append(([t.assistant_start], 0))
        parts = m["content"] if isinstance(m["content"], list) else [{"type": "text", "text": m["content"]}]
        for p in parts:
            body = tok.encode(p["text"])
            if p["type"] == "text":
                pieces.append((body, 1))
            elif p["type"] == "python":
                pieces += [([t.python_start], 1), (body, 1), ([t.python_end], 1)]
            else:
                pieces += [([t.output_start], 0), (body, 0), ([t.output_end], 0)]
        pieces.append(([t.assistant_end], 1))
    ids = [i for p, _ in pieces for i in p]
    mask = [w for p, w in pieces for _ in p]
    return ids, mask


def test_mask_covers_exactly_assistant_tokens_with_tool_calls(tok):
    ids, mask = render_conversation(tok, TOOL_CONVERSATION)
    assert (ids, mask) == expected_render(tok, TOOL_CONVERSATION)
    t = chat_tokens(tok)
    assert ids[0] == t.bos and len(ids) == len(mask)
    # tool outputs: every token from <|output_start|> to <|output_end|> is masked out
    inside_output = False
    for i, m in zip(ids, mask, strict=True):
        if i == t.output_start:
            inside_output = True
        if inside_output:
            assert m == 0
        if i == t.output_end:
            inside_output = False
    # the special tokens the assistant writes are trained, the ones others write are not
    for special, want in [(t.bos, 0), (t.user_start, 0), (t.user_end, 0), (t.assistant_start, 0),
                          (t.assistant_end, 1), (t.python_start, 1), (t.python_end, 1),
                          (t.output_start, 0), (t.output_end, 0)]:
        assert {m for i, m in zip(ids, mask, strict=True) if i == special} == {want}
    # the trained tokens decode to exactly what the assistant wrote (calls, not results)
    trained = tok.decode([i for i, m in zip(ids, mask, strict=True) if m])
    assert trained == ("Let me compute. <|python_start|>12*7<|python_end|> So it is 84.<|assistant_end|>"
                       "<|python_start|>48/2<|python_end|><|python_start|>24*2<|python_end|>#### 48"
                       "<|assistant_end|>You're welcome.<|assistant_end|>")
    assert trained.count("84") == 1  # " So it is 84." only: the tool's "84" is not trained
    # user text that looks like a special token is ordinary text
    assert ids.count(t.assistant_end) == 3
    assert "Thanks <|assistant_end|>" in tok.decode(ids)


def test_system_message_merged_into_first_user_turn(tok):
    with_system = render_conversation(tok, [{"role": "system", "content": "Be brief."},
                                            {"role": "user", "content": "Hi"},
                                            {"role": "assistant", "content": "Hello"}])
    merged = render_conversation(tok, [{"role": "user", "content": "Be brief.\n\nHi"},
                                       {"role": "assistant", "content": "Hello"}])
    assert with_system == merged


def test_task_example_dict_accepted_and_input_not_modified(tok):
    import copy

    original = copy.deepcopy(TOOL_CONVERSATION)
    assert render_conversation(tok, {"messages": TOOL_CONVERSATION}) == render_conversation(tok, TOOL_CONVERSATION)
    assert TOOL_CONVERSATION == original


def test_user_text_parts_are_joined(tok):
    parts = [{"type": "text", "text": "What is "}, {"type": "text", "text": "12*7?"}]
    as_parts = render_conversation(tok, [{"role": "system", "content": [{"type": "text", "text": "Be terse."}]},
                                         {"role": U, "content": parts}])
    assert as_parts == render_conversation(tok, [{"role": U, "content": "Be terse.\n\nWhat is 12*7?"}])


def test_max_tokens_truncates_both(tok):
    ids, mask = render_conversation(tok, TOOL_CONVERSATION)
    short_ids, short_mask = render_conversation(tok, TOOL_CONVERSATION, max_tokens=10)
    assert short_ids == ids[:10] and short_mask == mask[:10]


def test_render_for_completion(tok):
    history = TOOL_CONVERSATION[:-1]
    prompt = render_for_completion(tok, history)
    full, mask = render_conversation(tok, TOOL_CONVERSATION)
    t = chat_tokens(tok)
    assert prompt[-1] == t.assistant_start
    assert full[: len(prompt)] == prompt  # the prompt is exactly the prefix the model sees in training
    assert mask[len(prompt) - 1] == 0 and set(mask[len(prompt):]) == {1}  # then only the reply is trained
    with pytest.raises(ConversationError, match="must end with a user message"):
        render_for_completion(tok, TOOL_CONVERSATION)


def assistant_ids(tok, content) -> list[int]:
    ids, _ = render_conversation(tok, [{"role": "user", "content": "q"}, {"role": "assistant", "content": content}])
    return ids[ids.index(chat_tokens(tok).assistant_start) + 1:]


@pytest.mark.parametrize("content", [
    "Plain answer with ünïcode 🙂",
    "",
    TOOL_CONVERSATION[2]["content"],
    TOOL_CONVERSATION[4]["content"],
    [{"type": "text", "text": "a"}, {"type": "text", "text": ""}, {"type": "text", "text": "b"}],
    [{"type": "text", "text": "x"}, {"type": "python", "text": ""}, {"type": "text", "text": "y"}],
])
def test_round_trip_render_parse(tok, content):
    reply = parse_reply(tok, assistant_ids(tok, content))
    assert reply == {"role": "assistant", "content": normalize_content(content)}
    # a parsed reply renders to the same tokens, so the history the engine keeps is lossless
    assert assistant_ids(tok, reply["content"]) == assistant_ids(tok, content)


def test_parse_reply_stops_and_truncations(tok):
    t = chat_tokens(tok)
    hello = tok.encode("hello")
    assert parse_reply(tok, hello + [t.assistant_end] + tok.encode("junk"))["content"] == "hello"
    assert parse_reply(tok, hello + [t.user_start] + tok.encode("junk"))["content"] == "hello"
    assert parse_reply(tok, hello)["content"] == "hello"  # no end token (length limit)
    cut = parse_reply(tok, hello + [t.python_start] + tok.encode("12*"))["content"]
    assert cut == [{"type": "text", "text": "hello"}, {"type": "python", "text": "12*"}]
    stray = parse_reply(tok, hello + [t.python_end, t.output_end] + tok.encode("!"))["content"]
    assert stray == "hello!"


def test_normalize_and_content_text():
    parts = [{"type": "text", "text": ""}, {"type": "python", "text": "1+1"},
             {"type": "python_output", "text": "2"}, {"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    assert normalize_content(parts) == [{"type": "python", "text": "1+1"}, {"type": "python_output", "text": "2"},
                                        {"type": "text", "text": "ab"}]
    assert normalize_content([{"type": "text", "text": "a"}]) == "a"
    assert content_text(parts) == "1+12ab"


@pytest.mark.parametrize("conversation, message", [
    ([], "non-empty list"),
    ("hello", "non-empty list"),
    ({"messages": []}, "non-empty list"),
    ([{"role": U}], "message 0 must be a dict with 'role' and 'content'"),
    (["hi"], "message 0 must be a dict"),
    ([{"role": "bot", "content": "x"}], "message 0 has unknown role 'bot'"),
    ([{"role": A, "content": "x"}], "message 0 is from assistant but should be from user"),
    ([{"role": U, "content": "x"}, {"role": U, "content": "y"}], "message 1 is from user but should be from assistant"),
    ([{"role": U, "content": "x"}, {"role": A, "content": "y"}, {"role": "system", "content": "z"}],
     "only the first message may be a system message"),
    ([{"role": "system", "content": "s"}], "system message must be followed by a user message"),
    ([{"role": "system", "content": "s"}, {"role": A, "content": "y"}], "system message must be followed by a user"),
    ([{"role": "system", "content": "s"}, {"role": U, "content": "x"}, {"role": U, "content": "y"}],
     "message 2 is from user but should be from assistant"),
    ([{"role": U, "content": ["x"]}], r"message 0 \(user\), part 0 must be a text part"),
    ([{"role": U, "content": [{"type": "python", "text": "1"}]}], r"part 0 must be a text part"),
    ([{"role": U, "content": None}], r"message 0 \(user\) content must be a string"),
    ([{"role": U, "content": "x"}, {"role": A, "content": 3}], "must be a string or a list of parts"),
    ([{"role": U, "content": "x"}, {"role": A, "content": [{"type": "image", "text": "x"}]}],
     "part 0 has unknown type 'image'"),
    ([{"role": U, "content": "x"}, {"role": A, "content": [{"type": "text"}]}], "part 0 must be a dict"),
    ([{"role": U, "content": "x"}, {"role": A, "content": [{"type": "text", "text": 5}]}], "text must be a string"),
    ([{"role": U, "content": "x"}, {"role": A, "content": [{"type": "python_output", "text": "5"}]}],
     "does not directly follow a python part"),
    ([{"role": U, "content": "x"}, {"role": A, "content": [
        {"type": "python", "text": "1"}, {"type": "text", "text": "t"}, {"type": "python_output", "text": "1"}]}],
     "part 2 is a python_output"),
])
def test_bad_conversations_raise_one_clear_error(tok, conversation, message):
    with pytest.raises(ConversationError, match=message) as info:
        render_conversation(tok, conversation)
    assert isinstance(info.value, UserError)
    assert "\n" not in str(info.value)
    with pytest.raises(ConversationError, match=message):
        validate_conversation(conversation)


def test_conversation_may_end_with_user_turn(tok):
    ids, mask = render_conversation(tok, [{"role": U, "content": "only a question"}])
    assert set(mask) == {0} and ids[-1] == chat_tokens(tok).user_end
