"""gentwin.chat: Cohere's Chat API (and its deprecated Generate API) over a model folder, on gentwin's engines.

    from gentwin.chat import Client
    client = Client("fixtures/models/llama-fp32", engine="reference")   # engine "fast" is the default
    client.chat([{"role": "user", "content": "Hi"}], max_tokens=20, temperature=0).text

What each module holds:
- client.py: Client: chat(), chat_stream(), generate(), conversation(); how a call is prepared and run;
- options.py: the options, Cohere's names and defaults, mapped onto search options;
- prompts.py: messages checked, rendered by the chat template, truncated;
- prefix_cache.py: Generator snapshots shared across calls, so a prefix (a system prompt, an earlier turn)
  is prefilled once;
- reply.py: the generate loop of one reply, and why it ended (finish_reason);
- stops.py: stop and end sequences, and the streaming holdback;
- responses.py: ChatResponse and the Cohere v2 stream events;
- presets.py: named option sets in a JSON file the user owns;
- conversation.py: a live conversation on one Generator (onnxruntime-genai 0.6.0's chat mode), with undo.

`gentwin serve` (gentwin/serve.py) puts a Client behind Cohere's HTTP API; `gentwin chat` (gentwin/chat_cli.py)
puts a Conversation in a terminal.
"""

from gentwin.chat.client import Client
from gentwin.chat.conversation import Conversation
from gentwin.chat.presets import PresetError, PresetStore
from gentwin.chat.prompts import PromptTooLongError
from gentwin.chat.reply import COMPLETE, MAX_TOKENS, STOP_SEQUENCE
from gentwin.chat.responses import ChatResponse, Generation, Usage

__all__ = ["COMPLETE", "MAX_TOKENS", "STOP_SEQUENCE", "ChatResponse", "Client", "Conversation", "Generation",
           "PresetError", "PresetStore", "PromptTooLongError", "Usage"]
