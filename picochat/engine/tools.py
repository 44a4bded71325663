"""The tool-use state machine of one generated row, kept out of the decode loop.

The chat format marks a tool call as `<|python_start|> code <|python_end|>`. When the model
closes a call, we run the code (the calculator of `picochat.sandbox` by default) and force
`<|output_start|> result <|output_end|>` into the row, one token per decode step, instead of
sampling. The model then continues, conditioned on the result. Forced tokens are marked as such
so that training on rollouts (RL) gives them no weight: the model did not choose them.

    state:  text ──python_start──► python ──python_end──► text (+ queued output tokens)

The machine also labels every token with the segment it belongs to ("text", "python",
"python_output"), which is what a chat page needs to show tool calls and their results.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from picochat.sandbox.calculator import calculator
from picochat.tokenizer.chat import ChatTokens

Tool = Callable[[str], "str | None"]


def sandbox_calculator(code: str) -> str | None:
    """The default tool: picochat.sandbox's calculator (an AST whitelist: it never runs code)."""
    return calculator(code)


class ToolState:
    """Per-row state: inside a python block or not, the code so far, and tokens to force next."""

    def __init__(self, specials: ChatTokens, encode: Callable[[str], list[int]],
                 decode: Callable[[list[int]], str], tool: Tool | None):
        self.sp, self.encode, self.decode, self.tool = specials, encode, decode, tool
        self.in_python = False
        self.code: list[int] = []
        self.queue: deque[int] = deque()
        self.segment = "text"  # the segment of the next token's text

    def next_forced(self) -> int | None:
        """The token to force at this step, or None to sample."""
        return self.queue.popleft() if self.queue else None

    def observe(self, token: int) -> str:
        """Advance the machine past `token`; return the segment the token's text belongs to."""
        sp = self.sp
        if token == sp.python_start:
            self.in_python, self.code, self.segment = True, [], "python"
        elif token == sp.python_end and self.in_python:
            self.in_python, self.segment = False, "text"
            self._run_tool()
        elif token == sp.output_start:
            self.segment = "python_output"
        elif token == sp.output_end:
            self.segment = "text"
        elif self.in_python:
            self.code.append(token)
        return self.segment

    def _run_tool(self) -> None:
        if self.tool is None or not self.code:
            return
        result = self.tool(self.decode(self.code))
        # No result (code the sandbox refuses or that fails): force nothing and let the model go on,
        # as nanochat does; it learns from the missing output that the call did not work.
        if result is not None:
            self.queue.extend([self.sp.output_start, *self.encode(str(result)), self.sp.output_end])
