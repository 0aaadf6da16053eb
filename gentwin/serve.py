"""`gentwin serve MODEL_DIR`: Cohere's HTTP API over gentwin.chat, for the official cohere SDK and any HTTP client.

    gentwin serve fixtures/models/llama-fp32 --engine reference --port 8000

    import cohere
    co = cohere.ClientV2(api_key="any", base_url="http://127.0.0.1:8000")
    co.chat(model="local", messages=[{"role": "user", "content": "Hi"}]).message.content[0].text

Endpoints, with Cohere's request and response bodies:
- POST /v2/chat: JSON, or server-sent events (message-start ... message-end) with "stream": true. Besides
  Cohere's options it takes what Chat dropped and gentwin keeps: end_sequences, logit_bias, truncate, preset.
- POST /v1/generate: the deprecated Generate API (num_generations, stop and end sequences, raw_prompting ...).
- POST /v1/tokenize, POST /v1/detokenize.
One model is served: the "model" field is accepted and not read. Cohere's fields gentwin cannot honour (tools,
documents, response_format ...) are refused rather than ignored, and so is any field Cohere does not have.

Concurrency: the endpoints are plain functions, which FastAPI runs in its thread pool; each request runs on its
own Generators while the Model, the Tokenizer and the prefix cache are shared (gentwin.chat.Client). A stream's
events are pulled one at a time in the pool; when its client disconnects, Starlette cancels the response and
the stream is closed, which frees its generator.

Errors: every error body is Cohere's {"message": ...}: 400 for a bad request (anything gentwin.chat refuses
included), 404 and 405 for a wrong path or method, 413 for a body over the limit, 500 for anything else. None of
them stops the server.

Limits, so that no request can exhaust the server:
- the body: at most max_body_bytes (default 1 MiB, `gentwin serve --max-body-bytes N`), enforced by FastAPI's
  body limit before anything is parsed: a Content-Length over it is refused before a byte is read, a chunked
  body as soon as it grows past it;
- the fields: strict JSON types (no "yes" for a boolean, no 5.0 for an integer), and gentwin.chat's ranges;
- the prompt: refused by its length in characters before it is tokenized, when it cannot fit the context
  (gentwin.chat.client).
JSON nesting and array sizes are bounded by the body limit; JSON too deeply nested to parse is a 400.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from gentwin.chat import Client
from gentwin.chat.client import DEFAULT_ENGINE
from gentwin.chat.options import OPTION_NAMES
from gentwin.chat.responses import API_VERSION
from gentwin.errors import ArgumentValueError, GentwinError

MAX_TOKENIZE_CHARACTERS = 65536  # Cohere's limit on /v1/tokenize
DEFAULT_MAX_BODY_BYTES = 1 << 20  # 1 MiB: a million characters of messages, far beyond what a context holds


class CohereRequest(BaseModel):
    """Fields are checked for type here and for meaning by gentwin.chat; a field Cohere does not have is refused."""

    model_config = ConfigDict(extra="forbid", strict=True)
    model: str | None = None

    def options(self) -> dict:
        """The gentwin.chat options that the request sets, among its fields."""
        return {name: getattr(self, name) for name in type(self).model_fields
                if name in OPTION_NAMES and getattr(self, name) is not None}

    def refuse_unsupported(self, names: tuple[str, ...]) -> None:
        for name in names:
            if getattr(self, name) not in (None, False, "NONE"):
                raise HTTPException(400, f"gentwin serve does not support {name!r}")


class SamplingFields(CohereRequest):
    max_tokens: int | None = None
    temperature: float | None = None
    k: int | None = None
    p: float | None = None
    seed: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    stop_sequences: list[str] | None = None
    end_sequences: list[str] | None = None
    logit_bias: dict[str, float] | None = None
    truncate: Literal["NONE", "START", "END"] | None = None
    preset: str | None = None


class ChatRequest(SamplingFields):
    messages: list[Any]
    stream: bool = False
    # Cohere's, which gentwin does not serve: refused when set. priority is a scheduling hint: all are equal here.
    tools: Any = None
    strict_tools: bool | None = None
    documents: Any = None
    citation_options: Any = None
    response_format: Any = None
    safety_mode: Any = None
    logprobs: bool | None = None
    tool_choice: Any = None
    thinking: Any = None
    priority: int | None = None

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("tools", "strict_tools", "documents", "citation_options",
                                              "response_format", "safety_mode", "logprobs", "tool_choice", "thinking")


class GenerateRequest(SamplingFields):
    prompt: str | None = None
    num_generations: int | None = None
    raw_prompting: bool | None = None
    stream: bool = False
    return_likelihoods: Literal["NONE", "GENERATION", "ALL"] | None = None

    UNSUPPORTED: ClassVar[tuple[str, ...]] = ("stream", "return_likelihoods")


class TokenizeRequest(CohereRequest):
    text: str = Field(min_length=1, max_length=MAX_TOKENIZE_CHARACTERS)


class DetokenizeRequest(CohereRequest):
    tokens: list[int]


def create_app(client: Client, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> DeclaredLengthLimit:
    """The HTTP API over CLIENT (an ASGI app); request bodies over MAX_BODY_BYTES are refused with 413."""
    check_body_limit(max_body_bytes)
    app = FastAPI(title="gentwin serve", description="Cohere's chat and generate API on a local model folder",
                  max_body_size=max_body_bytes)
    app.state.client = client
    _add_error_handlers(app, max_body_bytes)

    @app.post("/v2/chat")
    def chat(body: ChatRequest):
        body.refuse_unsupported(ChatRequest.UNSUPPORTED)
        options = body.options()
        if body.stream:
            events = client.chat_stream(body.messages, preset=body.preset, **options)
            return StreamingResponse(server_sent_events(events), media_type="text/event-stream")
        return client.chat(body.messages, preset=body.preset, **options).to_v2_json()

    @app.post("/v1/generate")
    def generate(body: GenerateRequest):
        body.refuse_unsupported(GenerateRequest.UNSUPPORTED)
        options = body.options()
        response = client.generate_without_warning(body.prompt, preset=body.preset,
                                                   raw_prompting=bool(body.raw_prompting), **options)
        return response.to_v1_generate_json()

    @app.post("/v1/tokenize")
    def tokenize(body: TokenizeRequest):
        tokens = client.tokenizer.encode(body.text).tolist()
        return {"tokens": tokens, "token_strings": [client.tokenizer.decode([token]) for token in tokens],
                "meta": API_VERSION}

    @app.post("/v1/detokenize")
    def detokenize(body: DetokenizeRequest):
        return {"text": client.tokenizer.decode(body.tokens), "meta": API_VERSION}

    return DeclaredLengthLimit(app, max_body_bytes)


class DeclaredLengthLimit:
    """APP, with a request whose Content-Length is over MAX_BODY_BYTES refused at once, before APP sees it.
    FastAPI's body limit (max_body_size) refuses those too, but in plain text; it still counts the bytes of
    chunked bodies, and those it refuses through the app's error handlers, in Cohere's body."""

    def __init__(self, app: FastAPI, max_body_bytes: int):
        self.app, self.max_body_bytes = app, max_body_bytes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and _declared_length(scope) > self.max_body_bytes:
            await too_large(self.max_body_bytes)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def _declared_length(scope) -> int:
    """The request's Content-Length, 0 when it has none (or one uvicorn would have refused already)."""
    length = Headers(scope=scope).get("content-length", "")
    return int(length) if length.isdigit() else 0


def error(status: int, message: str) -> JSONResponse:
    """Cohere's error body."""
    return JSONResponse(status_code=status, content={"message": message})


def too_large(max_body_bytes: int) -> JSONResponse:
    return error(413, f"the request body is larger than this server's limit of {max_body_bytes} bytes "
                      f"(gentwin serve --max-body-bytes)")


async def server_sent_events(events: Iterator[dict]) -> AsyncIterator[str]:
    """EVENTS as server-sent events, each pulled in the thread pool. However this ends (a client that
    disconnects cancels it), EVENTS is closed, which frees its generator."""
    try:
        while (event := await run_in_threadpool(next, events, None)) is not None:
            yield f"event: {event['type']}\ndata: {json.dumps(event)}\n\n"
    finally:
        events.close()


def _add_error_handlers(app: FastAPI, max_body_bytes: int) -> None:
    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exception: RequestValidationError):
        problems = exception.errors()
        if problems and problems[0]["type"] == "json_invalid":
            return error(400, json_error_message(exception.body, problems[0]))
        described = [f"{'.'.join(str(part) for part in problem['loc'][1:]) or 'body'}: {problem['msg']}"
                     for problem in problems]
        return error(400, "invalid request: " + "; ".join(described))

    @app.exception_handler(HTTPException)
    async def http_error(_request: Request, exception: HTTPException):
        if exception.status_code == 413:
            return too_large(max_body_bytes)
        if isinstance(exception.__cause__, RecursionError):
            return error(400, "request body is not valid JSON: it is nested too deeply to parse")
        return error(exception.status_code, str(exception.detail))

    # What gentwin.chat raises for input it refuses: options, messages, presets, a prompt too long, token ids.
    for refused in (GentwinError, ValueError, TypeError):
        @app.exception_handler(refused)
        async def refused_request(_request: Request, exception: Exception):
            return error(400, str(exception))

    @app.exception_handler(Exception)
    async def internal_error(_request: Request, exception: Exception):
        return error(500, f"internal error: {type(exception).__name__}: {exception}")


def check_body_limit(max_body_bytes) -> None:
    if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1:
        raise ArgumentValueError(f"max_body_bytes must be a positive number of bytes, got {max_body_bytes!r}")


def json_error_message(document, problem: dict) -> str:
    """What FastAPI reports as "JSON decode error" at character POSITION, said with its line and column."""
    position = problem["loc"][-1]
    text = document.decode(errors="replace") if isinstance(document, bytes) else str(document)
    line = text.count("\n", 0, position) + 1
    column = position - text.rfind("\n", 0, position)
    return f"request body is not valid JSON: {problem['ctx']['error']} at line {line} column {column}"


def serve(model_dir: str, engine: str = DEFAULT_ENGINE, host: str = "127.0.0.1", port: int = 8000,
          presets: str | None = None, max_body_bytes: int | None = None) -> None:
    """Load MODEL_DIR on ENGINE and serve it until interrupted; MAX_BODY_BYTES: see create_app."""
    max_body_bytes = DEFAULT_MAX_BODY_BYTES if max_body_bytes is None else max_body_bytes
    check_body_limit(max_body_bytes)  # before the model loads, which takes a while
    uvicorn.run(create_app(Client(model_dir, engine, presets=presets), max_body_bytes), host=host, port=port)
