"""A small but real OpenAI-compatible HTTP server around llama_cpp.Llama, for integration tests.

Why not llama-cpp-python's own server (0.3.x): it refuses a list of prompts on /v1/completions (it asserts at
most one; the client sees HTTP 500) and its response_format only knows "text" and "json_object" (json_schema
gets HTTP 500 with a validation report). vLLM accepts both and Sprout's client is written for vLLM, so this
server implements the parts of the API Sprout uses, with vLLM's / OpenAI's request and response shapes:

  GET  /health, /v1/models
  POST /v1/completions       prompt: str | list[str]; one choice per prompt, "index" = the prompt's position
  POST /v1/chat/completions  response_format: text | json_object (+ optional "schema") | json_schema
                             (json_schema.schema becomes a llama.cpp grammar, as vLLM's guided decoding does)

Errors come back as {"error": {"message", "type", "param", "code"}}: an unknown model is 404 (as in vLLM),
invalid requests are 400, a missing or wrong API key (when --api-key is set) is 401.

Run: python -m tests.support.openai_llama_server --model PATH --served-model-name NAME --port N
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from typing import Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field


class OpenAIHTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param = status, message, type_, param


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)  # like OpenAI: unknown fields are ignored

    model: str
    temperature: float = Field(default=1.0, ge=0.0, le=2.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    n: int = Field(default=1, ge=1)
    stop: str | list[str] | None = None
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    seed: int | None = None
    stream: bool = False


class CompletionRequest(_Request):
    prompt: str | list[str]
    max_tokens: int | None = Field(default=16, ge=0)  # OpenAI's default for /completions


class ChatMessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    name: str
    description: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None


class ResponseFormat(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema"
    )  # llama-cpp-python's json_object form


class ChatRequest(_Request):
    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=0)
    max_completion_tokens: int | None = Field(default=None, ge=0)
    response_format: ResponseFormat | None = None


class LlamaServer:
    """Owns the model; a lock serialises generations (a Llama object is not thread-safe)."""

    def __init__(self, llama: Any, model_name: str, api_key: str | None) -> None:
        self.llama, self.model_name, self.api_key = llama, model_name, api_key
        self.lock = threading.Lock()

    def check(self, request: Request, body: _Request) -> None:
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise OpenAIHTTPError(401, "Unauthorized: a valid API key is required", "AuthenticationError")
        if body.model != self.model_name:
            raise OpenAIHTTPError(404, f"The model `{body.model}` does not exist.", "NotFoundError", "model")
        if body.n > 8:
            raise OpenAIHTTPError(
                400, "n: at most 8 choices per prompt on this server", "BadRequestError", "n"
            )
        if body.stream:
            raise OpenAIHTTPError(
                400, "streaming is not supported by this server", "BadRequestError", "stream"
            )

    def sampling(self, body: _Request) -> dict[str, Any]:
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        return {
            "temperature": body.temperature,
            "top_p": body.top_p,
            "stop": stop,
            "presence_penalty": body.presence_penalty,
            "frequency_penalty": body.frequency_penalty,
            "seed": body.seed if body.seed is not None else random.randrange(2**31),
        }

    def generate(self, fn: Any, **kwargs: Any) -> dict[str, Any]:
        with self.lock:
            try:
                return fn(**kwargs)
            except ValueError as exc:
                if "exceed context window" in str(exc):
                    raise OpenAIHTTPError(
                        400,
                        f"This model's maximum context length is exceeded: {exc}",
                        "BadRequestError",
                        "prompt",
                    ) from exc
                raise

    def completions(self, request: Request, body: CompletionRequest) -> dict[str, Any]:
        self.check(request, body)
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise OpenAIHTTPError(400, "prompt must not be empty", "BadRequestError", "prompt")
        choices, prompt_tokens, completion_tokens = [], 0, 0
        sampling = self.sampling(body)
        for prompt_index, prompt in enumerate(prompts):
            for j in range(body.n):  # vLLM's and OpenAI's numbering: index = prompt_index * n + j
                seed = sampling["seed"] + j
                out = self.generate(
                    self.llama.create_completion,
                    prompt=prompt,
                    max_tokens=body.max_tokens,
                    **{**sampling, "seed": seed},
                )
                choice = out["choices"][0]
                choices.append(
                    {
                        "index": prompt_index * body.n + j,
                        "text": choice["text"],
                        "logprobs": None,
                        "finish_reason": choice["finish_reason"],
                    }
                )
                prompt_tokens += out["usage"]["prompt_tokens"]
                completion_tokens += out["usage"]["completion_tokens"]
        return {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }

    def chat(self, request: Request, body: ChatRequest) -> dict[str, Any]:
        self.check(request, body)
        sampling = self.sampling(body)
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for j in range(body.n):
            out = self.generate(
                self.llama.create_chat_completion,
                messages=[m.model_dump() for m in body.messages],
                max_tokens=body.max_completion_tokens or body.max_tokens,
                response_format=_llama_response_format(body.response_format),
                **{**sampling, "seed": sampling["seed"] + j},
            )
            choice = out["choices"][0]
            choices.append(
                {
                    "index": j,
                    "message": {"role": "assistant", "content": choice["message"]["content"]},
                    "logprobs": None,
                    "finish_reason": choice["finish_reason"],
                }
            )
            prompt_tokens += out["usage"]["prompt_tokens"]
            completion_tokens += out["usage"]["completion_tokens"]
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": choices,
            "usage": _usage(prompt_tokens, completion_tokens),
        }


def _llama_response_format(fmt: ResponseFormat | None) -> dict[str, Any] | None:
    """OpenAI's json_schema form -> llama-cpp-python's json_object + schema (it makes a grammar of it)."""
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return (
            {"type": "json_object", "schema": fmt.schema_}
            if fmt.schema_ is not None
            else {"type": "json_object"}
        )
    if fmt.json_schema is None or fmt.json_schema.schema_ is None:
        raise OpenAIHTTPError(
            400, "response_format json_schema needs json_schema.schema", "BadRequestError", "response_format"
        )
    return {"type": "json_object", "schema": fmt.json_schema.schema_}


def _usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def _error(status: int, message: str, type_: str, param: str | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": type_, "param": param, "code": status}}
    return JSONResponse(body, status_code=status)


def create_app(server: LlamaServer) -> FastAPI:
    app = FastAPI(title="sprout test OpenAI-compatible server")

    @app.exception_handler(OpenAIHTTPError)
    async def _openai_error(request: Request, exc: OpenAIHTTPError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.type, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = [f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors()]
        return _error(400, "; ".join(parts) or "invalid request", "BadRequestError")

    @app.get("/health")
    def health() -> dict[str, str]:
        return {}

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        card = {"id": server.model_name, "object": "model", "created": 0, "owned_by": "sprout-tests"}
        return {"object": "list", "data": [card]}

    # Plain `def` endpoints: FastAPI runs them in its thread pool, so the server stays responsive while the
    # model generates; the lock in LlamaServer.generate keeps one generation at a time.
    @app.post("/v1/completions")
    def completions(request: Request, body: CompletionRequest) -> dict[str, Any]:
        return server.completions(request, body)

    @app.post("/v1/chat/completions")
    def chat(request: Request, body: ChatRequest) -> dict[str, Any]:
        return server.chat(request, body)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="GGUF file")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=2048)
    parser.add_argument("--n-threads", type=int, default=None)
    parser.add_argument("--api-key", default=None)
    args = parser.parse_args(argv)

    from llama_cpp import Llama

    llama = Llama(model_path=args.model, n_ctx=args.n_ctx, n_threads=args.n_threads, verbose=False)
    app = create_app(LlamaServer(llama, args.served_model_name, args.api_key))
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
