"""A scripted check of a chat model's behaviour: does it answer in the chat format, stop at
<|assistant_end|>, and use the calculator on arithmetic word problems?

This is the "Must show" of the chat stages (issue 6), run after demo SFT by the end-to-end test
and usable by hand:

    cd tests && python -c "from helpers.chat_check import check_run; print(check_run('demo'))"

Prompts are held-out synthetic word problems (tasks/synthetic.py, test split); replies come from
the one sampling routine (engine/), greedy, with the sandboxed calculator as the tool.
"""

from __future__ import annotations

from typing import Any

import torch

from picochat.tokenizer.chat import chat_tokens, content_text, parse_reply, render_for_completion


def score_reply(tokenizer: Any, ids: list[int], task: Any, example: dict) -> dict[str, Any]:
    """What one generated reply (the ids after <|assistant_start|>, forced tool output included)
    shows: stopped at <|assistant_end|> with no stray turn tokens, called the python tool, and
    got the answer right."""
    tok = chat_tokens(tokenizer)
    stray = {tok.bos, tok.user_start, tok.user_end, tok.assistant_start}
    body = ids[:-1] if ids and ids[-1] == tok.assistant_end else ids
    calls = ids.count(tok.python_start)
    closed = calls > 0 and ids.count(tok.python_end) >= calls
    text = content_text(parse_reply(tokenizer, ids)["content"])
    return {
        "stopped": bool(ids) and ids[-1] == tok.assistant_end and not (set(body) & stray),
        "called_calculator": closed,
        "correct": bool(task.evaluate(example, text)),
        "reply": text,
    }


def check_chat_format(model: torch.nn.Module, tokenizer: Any, *, n: int = 8, max_tokens: int = 128,
                      seed: int = 0) -> dict[str, Any]:
    """Greedy replies to n held-out word problems, scored by `score_reply`: counts of replies that
    stopped at <|assistant_end|>, called the calculator, and were correct, plus the transcripts."""
    from picochat.engine.engine import Engine, SamplingParams
    from picochat.tasks.synthetic import WordProblems

    task = WordProblems("test", size=n, seed=seed)
    examples = [task[i] for i in range(n)]
    prompts = [render_for_completion(tokenizer, {"messages": ex["messages"][:1]}) for ex in examples]
    engine = Engine(model, tokenizer)
    completions = engine.generate(prompts, SamplingParams(max_tokens=max_tokens, temperature=0.0))
    scored = []
    for ex, (c,) in zip(examples, completions, strict=True):
        s = score_reply(tokenizer, c.ids, task, ex)
        scored.append({"question": ex["messages"][0]["content"], "answer": ex["answer"], **s})
    summary = {k: sum(s[k] for s in scored) for k in ("stopped", "called_calculator", "correct")}
    return {"problems": n, **summary, "samples": scored}


def check_run(run: str, home: str = "", stage: str = "sft", device: str = "cpu", n: int = 8) -> dict[str, Any]:
    """`check_chat_format` on a finished stage of a run."""
    from picochat.common.paths import stage_dir
    from picochat.model.artifact import load_model
    from picochat.run_layout import load_tokenizer

    model, _ = load_model(stage_dir(run, stage, home), device)
    return check_chat_format(model, load_tokenizer(run, home), n=n)
