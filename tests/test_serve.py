"""gentwin serve, driven by the official cohere SDK: the same replies as gentwin.chat, Cohere's error bodies,
concurrent requests without cross-talk, and disconnected streams freeing their generators.

The server runs in a thread of this process (uvicorn on a free loopback port), so the tests can look at its
Client; one test starts `gentwin serve` itself, as a user would.
"""

from __future__ import annotations

import concurrent.futures
import json
import socket
import subprocess
import sys
import threading
import time

import cohere
import httpx
import numpy as np
import pytest
import uvicorn

from gentwin.chat import MAX_TOKENS, STOP_SEQUENCE, Client
from gentwin.serve import create_app
from tests.conftest import ENGINE_IDS
from tests.test_chat import CHAT_MODEL, SAMPLED, SAMPLED_SEARCH, SYSTEM, hand_driven, messages, template_tokens

TIMEOUT = 60  # seconds any one request may take; the tests end on their own even if the server hangs
# The cohere SDK reads pydantic models the pydantic 1 way; that is its business, not a finding here.
pytestmark = pytest.mark.filterwarnings("ignore::pydantic.warnings.PydanticDeprecatedSince20")


class ServerThread:
    """uvicorn serving APP on a free loopback port, in a daemon thread."""

    def __init__(self, app):
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        deadline = time.monotonic() + TIMEOUT
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *_):
        self.server.should_exit = True
        self.thread.join(TIMEOUT)


@pytest.fixture(scope="module", params=ENGINE_IDS)
def served(request, tmp_path_factory):
    """(base URL, the server's Client, a Client of the same engine for solo runs)."""
    presets = tmp_path_factory.mktemp("presets") / "presets.json"
    # A prefix cache large enough to keep every reply's end state, which the load test reads.
    client = Client(CHAT_MODEL, request.param, presets=presets, cache_entries=1000, cache_tokens=1_000_000)
    with ServerThread(create_app(client)) as url:
        yield url, client, Client(CHAT_MODEL, request.param, presets=presets, cache_entries=0)


def sdk_v2(url: str) -> cohere.ClientV2:
    return cohere.ClientV2(api_key="any", base_url=url, timeout=TIMEOUT, max_retries=0)


def sdk_v1(url: str) -> cohere.Client:
    return cohere.Client(api_key="any", base_url=url, timeout=TIMEOUT, max_retries=0)


def sdk_stream_deltas(events) -> list[str]:
    return [event.delta.message.content.text for event in events if event.type == "content-delta"]


# -- the SDK gets what gentwin.chat gives ----------------------------------------------------------------

def test_sdk_chat_equals_gentwin_chat(served):
    url, _, solo = served
    chat = messages("Hello over HTTP")
    response = sdk_v2(url).chat(model="local", messages=chat, max_tokens=12, **SAMPLED)
    direct = solo.chat(chat, max_tokens=12, **SAMPLED)
    assert response.message.content[0].text == direct.text
    assert response.message.role == "assistant"
    assert response.finish_reason == direct.finish_reason
    assert (response.usage.billed_units.input_tokens, response.usage.billed_units.output_tokens) == (
        direct.usage.input_tokens, direct.usage.output_tokens)
    assert response.usage.tokens.output_tokens == 12
    again = sdk_v2(url).chat(model="local", messages=chat, max_tokens=12, **SAMPLED)
    assert again.message.content[0].text == direct.text
    assert again.usage.cached_tokens == direct.usage.input_tokens - 1  # all but the last prompt token


def test_sdk_chat_stream_equals_a_hand_driven_generator(served):
    url, _, solo = served
    chat = messages("Stream over HTTP")
    events = list(sdk_v2(url).chat_stream(model="local", messages=chat, max_tokens=12, **SAMPLED))
    _, pieces = hand_driven(solo, template_tokens(solo, chat), SAMPLED_SEARCH, 12)
    assert sdk_stream_deltas(events) == [piece for piece in pieces if piece]
    assert [event.type for event in events[:2]] == ["message-start", "content-start"]
    assert [event.type for event in events[-2:]] == ["content-end", "message-end"]
    assert events[-1].delta.finish_reason == MAX_TOKENS
    assert events[-1].delta.usage.billed_units.output_tokens == 12


def test_sdk_chat_stream_with_a_stop_sequence_streams_nothing_past_it(served):
    url, _, solo = served
    chat = messages("Stop somewhere")
    text = solo.chat(chat, max_tokens=20, temperature=0).text
    stop = text[5:9]
    events = list(sdk_v2(url).chat_stream(model="local", messages=chat, max_tokens=20, temperature=0,
                                          stop_sequences=[stop]))
    assert "".join(sdk_stream_deltas(events)) == text[: text.find(stop)]
    assert events[-1].delta.finish_reason == STOP_SEQUENCE


def test_sdk_generate_equals_gentwin_generate(served):
    url, _, solo = served
    options = {"max_tokens": 10, "temperature": 0.9, "k": 30, "p": 0.8, "seed": 11, "num_generations": 3}
    response = sdk_v1(url).generate(prompt="Once upon a time", **options)
    direct = solo.generate_without_warning("Once upon a time", **options)
    assert [generation.text for generation in response.generations] == [g.text for g in direct.generations]
    assert [generation.index for generation in response.generations] == [0, 1, 2]
    assert [generation.finish_reason for generation in response.generations] == [
        g.finish_reason for g in direct.generations]
    assert response.meta.billed_units.input_tokens == direct.usage.input_tokens


def test_sdk_tokenize_and_detokenize(served):
    url, _, solo = served
    co = sdk_v1(url)
    tokens = co.tokenize(text="The reference is the oracle", model="local", offline=False).tokens
    assert tokens == solo.tokenizer.encode("The reference is the oracle").tolist()
    assert co.detokenize(tokens=tokens, model="local", offline=False).text == "The reference is the oracle"


def test_what_chat_dropped_is_served_too(served):
    url, client, solo = served
    client.presets.save("served-short", max_tokens=5, temperature=0)
    chat = messages("Extensions")
    body = {"model": "local", "messages": chat, "preset": "served-short", "logit_bias": {"300": 100.0},
            "end_sequences": ["never"], "truncate": "END"}
    response = httpx.post(f"{url}/v2/chat", json=body, timeout=TIMEOUT)
    assert response.status_code == 200
    direct = solo.chat(chat, preset="served-short", logit_bias={300: 100.0}, end_sequences=["never"], truncate="END")
    assert response.json()["message"]["content"][0]["text"] == direct.text
    assert direct.generations[0].token_ids == (300,) * 5


# -- bad requests get Cohere's error body, and the server goes on -------------------------------------------

LONG = "many words " * 150


@pytest.mark.parametrize("method, path, body, status, message", [
    ("POST", "/v2/chat", b"{not json", 400, "JSON"),
    ("POST", "/v2/chat", [1, 2], 400, "invalid request"),
    ("POST", "/v2/chat", {"model": "m"}, 400, "messages: Field required"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "foo": 1}, 400, "foo"),
    ("POST", "/v2/chat", {"messages": [{"role": "tool", "content": "x"}]}, 400, "role"),
    ("POST", "/v2/chat", {"messages": "hello"}, 400, "messages"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "temperature": -1}, 400, "temperature"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "max_tokens": "many"}, 400, "max_tokens"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "tools": [{}]}, 400, "'tools'"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "truncate": "MIDDLE"}, 400, "truncate"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": LONG}]}, 400, "truncate"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": LONG}], "stream": True}, 400, "truncate"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "preset": "nope"}, 400, "no preset"),
    ("POST", "/v2/chat", {"messages": [{"role": "user", "content": "x"}], "logit_bias": {"99999": 1}}, 400,
     "outside the vocabulary"),
    ("POST", "/v1/generate", {"max_tokens": 3}, 400, "prompt"),
    ("POST", "/v1/generate", {"prompt": "x", "stream": True}, 400, "'stream'"),
    ("POST", "/v1/generate", {"prompt": "x", "num_generations": 9}, 400, "num_generations"),
    ("POST", "/v1/detokenize", {"tokens": [999999]}, 400, "outside the vocabulary"),
    ("POST", "/v1/tokenize", {"text": ""}, 400, "text"),
    ("GET", "/v2/chat", None, 405, "Method Not Allowed"),
    ("POST", "/v3/chat", {}, 404, "Not Found"),
])
def test_bad_requests_get_a_cohere_error_body(served, method, path, body, status, message):
    url, _, _ = served
    content = body if isinstance(body, bytes) else None if body is None else json.dumps(body)
    response = httpx.request(method, url + path, content=content, timeout=TIMEOUT,
                             headers={"content-type": "application/json"})
    assert response.status_code == status
    assert list(response.json()) == ["message"] and message in response.json()["message"]
    assert sdk_v2(url).chat(model="local", messages=messages("still there?"), max_tokens=2).finish_reason


def test_the_sdk_raises_bad_request_with_the_message(served):
    url, _, _ = served
    with pytest.raises(cohere.BadRequestError) as caught:
        sdk_v2(url).chat(model="local", messages=messages("x"), temperature=-1)
    assert "temperature" in caught.value.body["message"]


# -- load: concurrent chats, no cross-talk, disconnects free their generators --------------------------------

HANG_UP_REPLY = {"max_tokens": 100, "temperature": 0}


def _disconnect_mid_stream(url: str, chat: list[dict]) -> int:
    """Open a stream, read until the first piece of text, hang up; the number of events read."""
    body = {"model": "local", "messages": chat, "stream": True, **HANG_UP_REPLY}
    read = 0
    with httpx.Client(timeout=TIMEOUT) as http, http.stream("POST", f"{url}/v2/chat", json=body) as response:
        for line in response.iter_lines():
            if line.startswith("data:"):
                read += 1
                if json.loads(line[len("data:"):])["type"] == "content-delta":
                    break
    return read


def test_32_concurrent_chats_each_equal_their_solo_run_and_disconnects_free_their_generators(served):
    url, client, solo = served
    co = sdk_v2(url)
    requests = [(messages(f"Question number {index}"), {"max_tokens": 12, "temperature": 0.8, "k": 40, "p": 0.95,
                                                         "seed": index}) for index in range(32)]
    dropped = [messages(f"I will hang up {index}") for index in range(4)]

    def run(index: int) -> str:
        chat, options = requests[index]
        if index % 2:
            return co.chat(model="local", messages=chat, **options).message.content[0].text
        return "".join(sdk_stream_deltas(co.chat_stream(model="local", messages=chat, **options)))

    with concurrent.futures.ThreadPoolExecutor(len(requests) + len(dropped)) as pool:
        replies = [pool.submit(run, index) for index in range(len(requests))]
        hang_ups = [pool.submit(_disconnect_mid_stream, url, chat) for chat in dropped]
        done, not_done = concurrent.futures.wait(replies + hang_ups, timeout=4 * TIMEOUT)
        assert not not_done, "requests still running"
    expected = [solo.chat(chat, **options).text for chat, options in requests]
    assert [reply.result() for reply in replies] == expected
    assert all(hang_up.result() >= 3 for hang_up in hang_ups)  # message-start, content-start, a delta
    deadline = time.monotonic() + TIMEOUT
    while client.active_generators and time.monotonic() < deadline:
        time.sleep(0.01)
    assert client.active_generators == 0
    # A reply read to its end leaves its end state in the prefix cache; the hung-up ones never got there.
    finished = messages("I will not hang up")
    co.chat(model="local", messages=finished, **HANG_UP_REPLY)
    for chat, hung_up in [(chat, True) for chat in dropped] + [(finished, False)]:
        reply = solo.chat(chat, **HANG_UP_REPLY).generations[0].token_ids
        whole = np.concatenate([template_tokens(client, chat), reply])
        cached = client.prefix_cache.lookup(whole)[0]
        assert cached < len(whole) if hung_up else cached == len(whole)


# -- `gentwin serve`, as a user starts it -------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_until_listening(server: subprocess.Popen, port: int) -> None:
    """Until the SERVER process accepts connections on PORT; fails if it exits or takes too long."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        assert server.poll() is None, server.stderr.read().decode() if server.stderr else "the server exited"
        assert time.monotonic() < deadline, "gentwin serve did not start listening"
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)


def test_gentwin_serve_command_serves_the_sdk():
    port = free_port()
    command = [sys.executable, "-m", "gentwin.cli", "serve", str(CHAT_MODEL), "--engine", "reference",
               "--port", str(port)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until_listening(server, port)
        reply = sdk_v2(f"http://127.0.0.1:{port}").chat(model="local", messages=messages("Hi", SYSTEM),
                                                         max_tokens=6, temperature=0)
        expected = Client(CHAT_MODEL, "reference", cache_entries=0).chat(messages("Hi", SYSTEM), max_tokens=6,
                                                                        temperature=0)
        assert reply.message.content[0].text == expected.text
    finally:
        server.terminate()
        server.wait(TIMEOUT)
