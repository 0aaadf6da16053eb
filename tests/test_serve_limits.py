"""gentwin serve cannot be exhausted by bad input: bodies over the limit are refused at once and cost the server
no memory, every field is strictly typed and bounded, a prompt too long for the context is refused before it is
tokenized, and a JSON error says where it is.

The server runs as a subprocess (so that its RSS is its own, read from /proc) on a free loopback port, with the
default body limit, 1 MiB.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest

from gentwin.chat import Client, PromptTooLongError
from gentwin.errors import GentwinError
from gentwin.serve import create_app
from tests.test_chat import CHAT_MODEL, messages
from tests.test_serve import TIMEOUT, free_port, wait_until_listening

LIMIT = 1 << 20  # the documented default of --max-body-bytes
CONTEXT = 256  # the chat model's context length (its genai_config.json)
TOO_LARGE = f"larger than this server's limit of {LIMIT} bytes"
RSS_GROWTH_MIB = 64  # the bound on the server's growth while six 10 MB bodies are refused, and after
SHORT_CHAT = {"messages": messages("Quick one"), "max_tokens": 5, "temperature": 0}


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


@pytest.fixture(scope="module")
def server():
    """(base URL, server pid)."""
    port = free_port()
    code = f"from gentwin.serve import serve; serve({str(CHAT_MODEL)!r}, 'fast', port={port})"
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_listening(process, port)
        url = f"http://127.0.0.1:{port}"
        assert httpx.post(f"{url}/v2/chat", json=SHORT_CHAT, timeout=TIMEOUT).status_code == 200  # warmed up
        yield url, process.pid
    finally:
        process.terminate()
        process.wait(TIMEOUT)


def post(url: str, path: str, content, **headers) -> httpx.Response:
    return httpx.post(url + path, content=content, timeout=TIMEOUT, headers={"content-type": "application/json",
                                                                             **headers})


def chunked(data: bytes, size: int = 65536):
    """DATA as a generator, which httpx sends with Transfer-Encoding: chunked (no Content-Length)."""
    for start in range(0, len(data), size):
        yield data[start:start + size]


def padded_chat(size: int) -> bytes:
    """A valid chat body of exactly SIZE bytes (JSON allows trailing whitespace)."""
    body = json.dumps(SHORT_CHAT).encode()
    return body + b" " * (size - len(body))


# -- the body limit -----------------------------------------------------------------------------------------

def test_six_10_mb_bodies_get_413_at_once_memory_stays_bounded_and_a_short_chat_answers_meanwhile(server):
    url, pid = server
    big = json.dumps({"messages": [{"role": "user", "content": "x" * 10_000_000}]}).encode()
    before = rss_mib(pid)
    peak, sampling = [before], threading.Event()

    def sample():
        while not sampling.is_set():
            peak.append(rss_mib(pid))
            time.sleep(0.005)

    def short_chat() -> tuple[float, httpx.Response]:
        start = time.monotonic()
        response = post(url, "/v2/chat", json.dumps(SHORT_CHAT))
        return time.monotonic() - start, response

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(7) as pool:
            refused = [pool.submit(post, url, "/v2/chat", big if index % 2 else chunked(big)) for index in range(6)]
            chat = pool.submit(short_chat)
            responses = [future.result() for future in refused]
            latency, chat_response = chat.result()
    finally:
        sampling.set()
        sampler.join()
    for response in responses:
        assert response.status_code == 413
        assert list(response.json()) == ["message"] and TOO_LARGE in response.json()["message"]
    assert chat_response.status_code == 200 and chat_response.json()["finish_reason"]
    assert latency < 1.0, f"a short chat took {latency:.2f} s while the big bodies were refused"
    assert max(peak) - before < RSS_GROWTH_MIB
    assert rss_mib(pid) - before < RSS_GROWTH_MIB


@pytest.mark.parametrize("send", [bytes, chunked], ids=["content-length", "chunked"])
def test_a_body_of_exactly_the_limit_is_served_and_one_byte_more_is_refused(server, send):
    url, _ = server
    assert post(url, "/v2/chat", send(padded_chat(LIMIT))).status_code == 200
    response = post(url, "/v2/chat", send(padded_chat(LIMIT + 1)))
    assert response.status_code == 413 and TOO_LARGE in response.json()["message"]


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(server):
    """The 413 comes back with only the headers sent: the server does not wait for the body."""
    url, _ = server
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=TIMEOUT) as connection:
        connection.sendall(f"POST /v2/chat HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                           f"Content-Length: {10 * LIMIT}\r\n\r\n".encode())
        reply = b""
        while TOO_LARGE.encode() not in reply and (received := connection.recv(65536)):
            reply += received
    assert reply.startswith(b"HTTP/1.1 413") and TOO_LARGE.encode() in reply


def test_the_body_limit_must_be_a_positive_number_of_bytes():
    client = Client(CHAT_MODEL, "fast", cache_entries=0)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(GentwinError, match="max_body_bytes must be a positive number of bytes"):
            create_app(client, bad)


# -- fields: strict types, sane ranges ---------------------------------------------------------------------

def chat_with(**fields) -> dict:
    return {"messages": messages("hi"), **fields}


@pytest.mark.parametrize("path, body, message", [
    ("/v2/chat", chat_with(stream="yes"), "stream: Input should be a valid boolean"),
    ("/v2/chat", chat_with(stream=1), "stream: Input should be a valid boolean"),
    ("/v2/chat", chat_with(logprobs="false"), "logprobs: Input should be a valid boolean"),
    ("/v1/generate", {"prompt": "x", "raw_prompting": "yes"}, "raw_prompting: Input should be a valid boolean"),
    ("/v2/chat", chat_with(max_tokens=5.0), "max_tokens: Input should be a valid integer"),
    ("/v2/chat", chat_with(max_tokens=10**12), f"max_tokens must be at most {CONTEXT - 1}"),
    ("/v2/chat", chat_with(max_tokens=CONTEXT), f"max_tokens must be at most {CONTEXT - 1}"),
    ("/v2/chat", chat_with(temperature=1e308), "temperature must be in [0.0, 5.0]"),
    ("/v2/chat", chat_with(temperature=5.5), "temperature must be in [0.0, 5.0]"),
    ("/v2/chat", chat_with(temperature="0.5"), "temperature: Input should be a valid number"),
    ("/v2/chat", chat_with(k=10**12), "top_k"),
    ("/v2/chat", chat_with(k=3.0), "k: Input should be a valid integer"),
    ("/v2/chat", chat_with(p=1.5), "p must be in (0.0, 1.0]"),
    ("/v2/chat", chat_with(seed=2**31), "seed must be in [0, 2147483647]"),
    ("/v2/chat", chat_with(frequency_penalty=1e9), "frequency_penalty must be in [0.0, 1000.0]"),
    ("/v2/chat", chat_with(presence_penalty=1001), "presence_penalty must be in [0.0, 1000.0]"),
    ("/v2/chat", chat_with(logit_bias={"5": 1e9}), "logit_bias[5] must be in [-1000.0, 1000.0]"),
    ("/v2/chat", chat_with(stop_sequences=["a"] * 6), "stop_sequences holds 6 sequences; at most 5"),
    ("/v2/chat", chat_with(end_sequences=["x" * 513]), "end_sequences[0] is 513 characters"),
    ("/v1/generate", {"prompt": "x", "num_generations": 2.0}, "num_generations: Input should be a valid integer"),
    ("/v1/detokenize", {"tokens": [1.0]}, "tokens.0: Input should be a valid integer"),
])
def test_each_field_is_strictly_typed_and_bounded(server, path, body, message):
    url, _ = server
    response = post(url, path, json.dumps(body))
    assert response.status_code == 400
    assert list(response.json()) == ["message"] and message in response.json()["message"]


def test_a_large_message_is_not_echoed_in_the_error(server):
    url, _ = server
    response = post(url, "/v2/chat", json.dumps({"messages": [{"role": "x" * 100_000, "content": [1] * 100_000}]}))
    assert response.status_code == 400 and len(response.text) < 500


# -- JSON errors say what and where ------------------------------------------------------------------------

@pytest.mark.parametrize("body, message", [
    (b'{"messages": [1,\n  ]}', "request body is not valid JSON: Expecting value at line 2 column 3"),
    (b"{not json", "request body is not valid JSON: Expecting property name enclosed in double quotes at line 1 "
                   "column 2"),
    (b"[" * 100_000, "request body is not valid JSON: it is nested too deeply to parse"),
])
def test_json_errors_say_what_and_where(server, body, message):
    url, _ = server
    response = post(url, "/v2/chat", body)
    assert response.status_code == 400 and response.json() == {"message": message}


# -- prompt length, in characters, before tokenizing ----------------------------------------------------------

def test_a_prompt_too_long_in_characters_is_refused_before_it_is_tokenized(monkeypatch):
    client = Client(CHAT_MODEL, "fast", cache_entries=0)
    # The longest token of the chat model's vocabulary has 13 characters (its tokenizer.json); the context
    # leaves 255 tokens to a prompt, so no text of more than 255 * 13 characters fits.
    assert client.max_prompt_characters == (CONTEXT - 1) * 13
    encoded = []
    monkeypatch.setattr(client.tokenizer, "encode", lambda text: encoded.append(text))
    with pytest.raises(PromptTooLongError, match=f"characters, more than the {(CONTEXT - 1) * 13}"):
        client.chat(messages("x" * client.max_prompt_characters))
    with pytest.raises(PromptTooLongError, match="characters"):
        client.generate_without_warning("x" * 4000, raw_prompting=True, truncate="NONE")
    assert encoded == []


def test_the_character_bound_is_tight_the_longest_token_repeated_fills_the_prompt_exactly():
    """The chat model's longest token, "<|assistant|>" (13 characters), repeated to the bound is exactly the
    prompt's 255 tokens: a text at the bound can fit, so the bound refuses nothing that could."""
    client = Client(CHAT_MODEL, "fast", cache_entries=0)
    text = "<|assistant|>" * (CONTEXT - 1)
    assert len(text) == client.max_prompt_characters
    assert len(client.tokenizer.encode(text)) == CONTEXT - 1
