"""`picochat chat`: talk to a trained model in the terminal.

Streams each reply token by token, keeps the conversation for multi-turn chat, shows tool calls
and their output, and understands `/clear` (new conversation) and `/quit`. `-p "prompt"` answers
one prompt and exits, for scripts.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from picochat.engine.engine import Engine, SamplingParams
from picochat.engine.text import merge_pieces
from picochat.tokenizer.chat import render_for_completion

# How tool segments look in a terminal; plain text is printed as it is.
_OPEN = {"python": "\n[python] ", "python_output": "\n[output] "}


def reply(engine: Engine, conversation: list[dict], params: SamplingParams, out: TextIO) -> Any:
    """Stream the assistant's next reply to `out`; return its content (a string, or parts when
    it used a tool) to append to the conversation."""
    prompt = render_for_completion(engine.tokenizer, conversation)
    pieces, segment = [], "text"
    for ev in engine.stream([prompt], params):
        for seg, text in ev.text:
            if seg != segment:
                out.write(_OPEN.get(seg, "\n"))
                segment = seg
            out.write(text)
            out.flush()
            pieces.append((seg, text))
        if ev.finish == "length":
            out.write(" [cut off: max tokens reached]")
    out.write("\n")
    parts = merge_pieces(pieces)
    return parts if any(p["type"] != "text" for p in parts) else "".join(p["text"] for p in parts)


def main(cfg: Any) -> int:
    from picochat.common.device import pick_device
    from picochat.run_layout import load_model_and_tokenizer

    c = cfg.chat
    model, tokenizer, stage = load_model_and_tokenizer(cfg.run.run, cfg.run.home, c.stage,
                                                       pick_device(cfg.run.device))
    engine = Engine(model, tokenizer)
    params = SamplingParams(max_tokens=c.max_tokens, temperature=c.temperature, top_k=c.top_k,
                            top_p=c.top_p, seed=cfg.run.seed)
    if cfg.args.prompt:
        reply(engine, [{"role": "user", "content": cfg.args.prompt}], params, sys.stdout)
        return 0
    print(f"picochat: chatting with run '{cfg.run.run}' ({stage}). /clear starts over, /quit or Ctrl-D exits.")
    conversation: list[dict] = []
    turn = 0
    while True:
        try:
            line = input("\nyou> ").strip()
        except EOFError:
            print()
            return 0
        if line in ("/quit", "/exit"):
            return 0
        if line == "/clear":
            conversation = []
            print("(new conversation)")
            continue
        if not line:
            continue
        conversation.append({"role": "user", "content": line})
        sys.stdout.write("picochat> ")
        turn += 1
        try:
            content = reply(engine, conversation, _with_seed(params, turn), sys.stdout)
        except KeyboardInterrupt:
            print("\n(interrupted)")
            conversation.pop()
            continue
        conversation.append({"role": "assistant", "content": content})


def _with_seed(params: SamplingParams, turn: int) -> SamplingParams:
    from dataclasses import replace

    return replace(params, seed=None if params.seed is None else params.seed + turn)
