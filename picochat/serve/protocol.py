"""The wire format of the OpenAI-compatible API: request schemas, response builders, errors.

Requests are validated by pydantic. Fields we do not implement (`user`, `logit_bias`, ...) are
ignored, as many OpenAI-compatible servers do, so that existing clients work unchanged.
`logprobs: true` reports each generated token's logprob (under the model at temperature 1);
`top_logprobs` is not supported. picochat extensions:
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

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Part(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: Literal["text", "python", "python_output"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant"]
    content: str | list[Part]


class StreamOptions(BaseModel):
    include_usage: bool = False


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str | None = None
    messages: list[Message] = Field(min_length=1)
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    n: int = Field(1, ge=1, le=16)
    seed: int | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    logprobs: bool = False
    top_logprobs: int | None = None

    @field_validator("top_logprobs")
    @classmethod
    def _top(cls, v: int | None) -> int | None:
        if v:
            raise ValueError("top_logprobs is not supported (the engine reports the chosen token's logprob); "
                             "leave it out or set it to 0")
        return v

    @field_validator("stop")
    @classmethod
    def _stops(cls, v: str | list[str] | None) -> list[str]:
        stops = [v] if isinstance(v, str) else list(v or [])
        if len(stops) > 4:
            raise ValueError("at most 4 stop strings are allowed")
        return [s for s in stops if s]

    def conversation(self) -> list[dict[str, Any]]:
        """The messages as a picochat conversation (see tokenizer/chat.py). User and system content
        given as text parts is joined into one string."""
        conv = []
        for m in self.messages:
            content: Any = m.content
            if isinstance(content, list):
                if m.role != "assistant":
                    content = "".join(p.text for p in content if p.type == "text")
                else:
                    content = [p.model_dump() for p in content]
            conv.append({"role": m.role, "content": content})
        return conv


def error_body(message: str, type_: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def new_id() -> str:
    return "chatcmpl-" + uuid.uuid4().hex[:24]


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
