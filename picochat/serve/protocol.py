"""The wire format of the OpenAI-compatible API: request schemas, response builders, errors.

Requests are validated strictly (pydantic strict mode): `"stream": "yes"`, `"max_tokens": "5"`,
`5.0` for an integer or `true` for a number are 400s, not guesses. Unknown top-level fields are
refused, as OpenAI's API does ("unrecognized request argument"), so that a misspelt
`temprature` is not silently ignored; fields OpenAI defines that picochat cannot honour
(penalties, logit_bias, tools, top_logprobs, ...) are accepted only at their neutral value and
otherwise answered with a 400 that says so. `null` means "the default", as in OpenAI's API.

`logprobs` reports each generated token's logprob (under the model at temperature 1); the top
alternatives are not reported. picochat extensions:
- `top_k` in the request;
- assistant `content` may be a list of parts `{"type": "text" | "python" | "python_output",
  "text"}` (the chat format's tool calls); the reply message carries the same `parts`;
- every streamed delta carries `segment` ("text", "python" or "python_output"), so a page can
  show tool calls and their output apart from the reply.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INT64 = 2**63 - 1
MAX_N = 16
MAX_STOPS = 4
MAX_STOP_CHARS = 256


class Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")
    type: str
    text: str

    @field_validator("type")
    @classmethod
    def _type(cls, v: str) -> str:
        if v not in ("text", "python", "python_output"):
            raise ValueError(f"content parts of type {v!r} are not supported; picochat reads text "
                             "('text', and 'python' / 'python_output' in assistant turns)")
        return v


class Message(BaseModel):
    # Extra keys are ignored here so that a reply can be sent back as it came (`parts`, and the
    # official client's `refusal`, `annotations`, ... all null or empty).
    model_config = ConfigDict(strict=True, extra="ignore")
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[Part]
    name: str | None = None
    tool_calls: list[Any] | None = None
    function_call: Any = None

    @model_validator(mode="after")
    def _no_tool_calls(self) -> Message:
        if self.tool_calls or self.function_call:
            raise ValueError("tool_calls in messages are not supported (picochat's one tool, the python "
                             "calculator, runs inside the reply as `python` parts)")
        return self


class StreamOptions(Strict):
    include_usage: bool | None = None


class ResponseFormat(Strict):
    type: Literal["text"]


def _unsupported(field: str, why: str) -> ValueError:
    return ValueError(f"{field} is not supported: {why}")


class SamplingFields(Strict):
    """What chat and text completions share: the model name, sampling and streaming."""

    model: str | None = None
    temperature: float | None = Field(None, ge=0.0, le=2.0)
    top_p: float | None = Field(None, gt=0.0, le=1.0)
    top_k: int | None = Field(None, ge=0, le=2**31 - 1)
    n: int | None = Field(None, ge=1, le=MAX_N)
    seed: int | None = Field(None, ge=-INT64 - 1, le=INT64)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    frequency_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    presence_penalty: float | None = Field(None, ge=-2.0, le=2.0)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > MAX_STOPS:
            raise ValueError(f"at most {MAX_STOPS} stop strings are allowed")
        for s in stops:
            if not s or len(s) > MAX_STOP_CHARS:
                raise ValueError(f"each stop string must be 1 to {MAX_STOP_CHARS} characters")
        return stops

    @field_validator("frequency_penalty", "presence_penalty")
    @classmethod
    def _no_penalty(cls, v: float | None, info: Any) -> float | None:
        if v:
            raise _unsupported(info.field_name, "the sampler has no repetition penalties; leave it out or send 0")
        return v

    @field_validator("logit_bias")
    @classmethod
    def _no_bias(cls, v: dict | None) -> dict | None:
        if v:
            raise _unsupported("logit_bias", "leave it out or send {}")
        return v

    @model_validator(mode="after")
    def _options_need_stream(self) -> SamplingFields:
        if self.stream_options is not None and not self.stream:
            raise ValueError("stream_options is only allowed when stream is true")
        return self

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)


class ChatCompletionRequest(SamplingFields):
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1, le=INT64)
    max_completion_tokens: int | None = Field(None, ge=1, le=INT64)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: ResponseFormat | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top(cls, v: int | None) -> int | None:
        if v:
            raise _unsupported("top_logprobs", "the engine reports the chosen token's logprob only; "
                               "leave it out or set it to 0")
        return v

    @field_validator("tools", "tool_choice", "functions", "function_call")
    @classmethod
    def _no_tools(cls, v: Any, info: Any) -> Any:
        if v not in (None, [], "none"):
            raise _unsupported(info.field_name, "picochat's one tool, the python calculator, is built into the "
                               "chat format and needs no declaration")
        return v

    @property
    def requested_tokens(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def conversation(self) -> list[dict[str, Any]]:
        """The messages as a picochat conversation (see tokenizer/chat.py). User and system content
        given as text parts is joined into one string; `developer` is OpenAI's newer name for
        `system`."""
        conv = []
        for m in self.messages:
            content: Any = m.content
            if isinstance(content, list):
                if m.role != "assistant":
                    content = "".join(p.text for p in content if p.type == "text")
                else:
                    content = [p.model_dump() for p in content]
            conv.append({"role": "system" if m.role == "developer" else m.role, "content": content})
        return conv


MAX_PROMPTS = 32
PROMPT_SHAPES = "a string, a list of strings, a list of token ids or a list of lists of token ids"


def _is_ids(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(
        type(t) is int and 0 <= t <= INT64 for t in v)  # noqa: E721 (bool is an int subclass: no)


class CompletionRequest(SamplingFields):
    """POST /v1/completions: plain text continuation of one prompt or a list of prompts."""

    prompt: Any
    max_tokens: int | None = Field(None, ge=1, le=INT64)
    echo: bool | None = None
    logprobs: int | None = Field(None, ge=0, le=5)
    suffix: str | None = None
    best_of: int | None = Field(None, ge=1, le=MAX_N)

    @field_validator("prompt")
    @classmethod
    def _prompts(cls, v: Any) -> str | list:
        """The four shapes OpenAI takes. Token ids must be non-negative integers (not bools, not
        floats); whether they are in the vocabulary is checked against the tokenizer later."""
        if isinstance(v, str) or _is_ids(v):
            return v
        if not isinstance(v, list) or not v:
            raise ValueError(f"prompt must be {PROMPT_SHAPES}")
        if len(v) > MAX_PROMPTS:
            raise ValueError(f"at most {MAX_PROMPTS} prompts per request")
        if all(isinstance(p, str) for p in v) or all(_is_ids(p) for p in v):
            return v
        raise ValueError(f"prompt must be {PROMPT_SHAPES} (token id lists must be non-empty)")

    @model_validator(mode="after")
    def _supported(self) -> CompletionRequest:
        if self.logprobs:
            raise _unsupported("logprobs > 0", "the engine reports the chosen token's logprob only "
                               "(send logprobs: 0 for that)")
        if self.echo and self.logprobs is not None:
            raise _unsupported("echo with logprobs", "prompt tokens are not scored")
        if self.suffix:
            raise _unsupported("suffix", "the model has no fill-in-the-middle format")
        if self.best_of not in (None, 1, self.n or 1):
            raise _unsupported("best_of", "every sample is returned; use n")
        return self

    def prompts(self) -> list[str | list[int]]:
        """The request's prompts, each a string or a list of token ids."""
        if isinstance(self.prompt, str) or isinstance(self.prompt[0], int):
            return [self.prompt]
        return list(self.prompt)


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_id(prefix: str = "chatcmpl-") -> str:
    return prefix + uuid.uuid4().hex[:24]


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chunk(cid: str, model: str, created: int, choices: list[dict], usage_: dict | None = None) -> dict:
    out = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
           "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def token_logprob(tokenizer: Any, token_id: int, logprob: float) -> dict[str, Any]:
    """One entry of OpenAI's `logprobs.content`: the token's text, bytes and logprob."""
    data = tokenizer.id_to_bytes(token_id) or tokenizer.decode([token_id]).encode()  # specials: their name
    return {"token": data.decode("utf-8", errors="replace"), "logprob": logprob, "bytes": list(data),
            "top_logprobs": []}


def delta_choice(index: int, delta: dict[str, Any], finish_reason: str | None = None,
                 logprobs: list[dict] | None = None) -> dict:
    return {"index": index, "delta": delta, "finish_reason": finish_reason,
            "logprobs": None if logprobs is None else {"content": logprobs}}


def completion(cid: str, model: str, created: int, replies: list[tuple[list[dict], str, list[dict] | None]],
               usage_: dict) -> dict:
    """The non-streaming response; replies are (parts, finish_reason, logprobs or None) per choice.
    `content` is all the reply's text in order (tool calls and outputs included); `parts` keeps
    them apart."""
    choices = []
    for i, (parts, finish, logprobs) in enumerate(replies):
        message = {"role": "assistant", "content": "".join(p["text"] for p in parts), "parts": parts}
        choices.append({"index": i, "message": message, "finish_reason": finish,
                        "logprobs": None if logprobs is None else {"content": logprobs}})
    return {"id": cid, "object": "chat.completion", "created": created, "model": model,
            "choices": choices, "usage": usage_}


def models_list(names: list[str]) -> dict:
    now = int(time.time())
    return {"object": "list", "data": [{"id": n, "object": "model", "created": now, "owned_by": "picochat"}
                                       for n in names]}


def text_choice(index: int, text: str, finish_reason: str | None, logprobs: dict | None) -> dict:
    """One choice of a text completion (streamed chunks carry the new text only)."""
    return {"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}


def text_completion(cid: str, model: str, created: int, choices: list[dict], usage_: dict | None) -> dict:
    """The `text_completion` object: the whole response, or one streamed chunk (OpenAI uses the
    same object for both; a stream's last chunk may carry `usage` and no choices)."""
    out = {"id": cid, "object": "text_completion", "created": created, "model": model, "choices": choices}
    if usage_ is not None:
        out["usage"] = usage_
    return out


def text_logprobs(tokens: list[str], logprobs: list[float], offset: int) -> dict:
    """The legacy completions `logprobs` object for the chosen tokens (top alternatives: null)."""
    offsets, at = [], offset
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": logprobs, "top_logprobs": None, "text_offset": offsets}
