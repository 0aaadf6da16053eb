"""Chat templates: where a model folder keeps its template, and rendering one the way the peer does.

onnxruntime-genai 0.18 renders chat templates with minja (onnxruntime-extensions' C++ Jinja), parsed with
all options off. So, unlike Hugging Face transformers (trim_blocks=True, lstrip_blocks=True), the peer keeps
the newline after a block tag and the indentation before it; gentwin renders with jinja2 under the same
settings. What the template sees is the peer's context: `messages` and `tools` as parsed from their JSON
strings, `add_generation_prompt`, `bos_token` and `eos_token` (tokenizer_config.json's strings), and the
functions `raise_exception(message)` and `strftime_now(format)`; `tojson` writes JSON as Python's
json.dumps does with ensure_ascii=False, as both minja and transformers do. `{{ none }}` renders as ''
(minja), not 'None' (jinja2).

Tools, as the peer hands them over: OpenAI-style definitions are flattened to {"name", "description",
"parameters"} unless the template reads them raw (it mentions `tool.function` or `tools | tojson`). A
message may carry its own "tools" (Phi-4-mini), a JSON string parsed the same way; then single quotes
around keys and values in the rendered text become double quotes.

Where minja is looser than jinja2, gentwin raises a ChatTemplateError naming the problem: a message without
a "role" that the template reads (the peer renders 'None'), 'a' + 1 (the peer concatenates).
"""

from __future__ import annotations

import datetime
import functools
import json
import os
import re

import jinja2
import jinja2.sandbox

from gentwin import errors
from gentwin.errors import GentwinError

# The peer's fixed template for Whisper, whose tokenizer_config.json has none: the contents, one per line.
WHISPER_TEMPLATE = "{{ messages | map(attribute='content') | join('\\n') }}"

# Templates that read OpenAI-style tool definitions themselves get the tools as given; for the others the
# peer flattens each tool to {"name", "description", "parameters"} (see _flatten_tool).
READS_RAW_TOOLS = re.compile(r"tool\.function|tools?\s*\|\s*tojson")


class ChatTemplateError(GentwinError):
    """The chat template is missing or broken, raised, or was given messages or tools it cannot use."""


def load_default_template(folder: str, tokenizer_config: dict) -> str:
    """The folder's own template, '' if none, looked up as the peer does.

    tokenizer_config.json's "chat_template" wins; only when that key is absent does chat_template.jinja
    count, then chat_template.json's "chat_template" field.
    """
    if tokenizer_config.get("tokenizer_class") == "WhisperTokenizer":
        return WHISPER_TEMPLATE
    if "chat_template" in tokenizer_config:
        return _named_default(tokenizer_config["chat_template"])
    jinja_path = os.path.join(folder, "chat_template.jinja")
    if os.path.isfile(jinja_path):
        with open(jinja_path, encoding="utf-8") as f:
            return f.read()
    json_path = os.path.join(folder, "chat_template.json")
    if os.path.isfile(json_path):
        with open(json_path, encoding="utf-8") as f:
            return _named_default(json.load(f).get("chat_template", ""))
    return ""


def _named_default(template) -> str:
    # transformers may save several named templates as [{"name": ..., "template": ...}]; "default" is the one
    # used when none is named.
    if isinstance(template, list):
        named = {entry.get("name"): entry.get("template", "") for entry in template if isinstance(entry, dict)}
        return named.get("default", "")
    return template or ""


def render(template: str, messages: str, tools: str | None, add_generation_prompt: bool,
           bos_token: str, eos_token: str) -> str:
    """Render `template` for the JSON strings `messages` and `tools` (None or '' for no tools)."""
    if not template:
        raise ChatTemplateError("no chat template: the model folder has none (tokenizer_config.json 'chat_template', "
                                "chat_template.jinja or chat_template.json) and no template_str was given")
    compiled = _compile(template)
    flatten = not READS_RAW_TOOLS.search(template)
    parsed_messages = _parse_json(messages, "messages")
    if not isinstance(parsed_messages, list):
        raise ChatTemplateError(f"messages must be a JSON array of messages, got {errors.shown(parsed_messages)}")
    context = {"messages": parsed_messages, "add_generation_prompt": add_generation_prompt,
               "bos_token": bos_token, "eos_token": eos_token}
    if tools is not None and tools != "":
        context["tools"] = _parse_tools(tools, "tools", flatten)
    tools_in_messages = _parse_tools_in_messages(parsed_messages, flatten)
    try:
        text = compiled.render(context)
    except Exception as e:  # whatever a template does wrong, it is the template's error
        raise ChatTemplateError(f"chat template failed: {type(e).__name__}: {e}") from None
    return _normalize_tool_quotes(text) if tools_in_messages else text


def _parse_json(text: str, what: str):
    if not isinstance(text, str):
        raise errors.ArgumentTypeError(f"{what} must be a JSON string (json.dumps it first), got {errors.shown(text)}")
    errors.text(text, what)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ChatTemplateError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:  # the peer's parser crashes the process on such input
        raise ChatTemplateError(f"{what} is nested too deeply to parse ({len(text)} characters of JSON)") from None


def _parse_tools(text: str, what: str, flatten: bool):
    tools = _parse_json(text, what)
    if flatten and isinstance(tools, list):
        return [_flatten_tool(tool) if isinstance(tool, dict) else tool for tool in tools]
    return tools


def _flatten_tool(tool: dict) -> dict:
    """OpenAI's {"type": "function", "function": {...}} or {"type": "tool", ...} to {"name", "description",
    "parameters"}, with JSON-schema parameters flattened to {name: {"type", "description"}}; others as given."""
    if tool.get("type") == "function" and "function" in tool:
        tool = tool["function"]
    elif tool.get("type") != "tool":
        return tool
    return {"name": tool.get("name", ""), "description": tool.get("description", ""),
            "parameters": _flatten_parameters(tool.get("parameters", {}))}


def _flatten_parameters(parameters):
    if not (isinstance(parameters, dict) and "properties" in parameters):
        return parameters
    flat = {}
    for name, schema in parameters["properties"].items():
        entry = {}
        if "type" in schema:
            entry["type"] = _short_type(schema["type"])
        if "description" in schema:
            entry["description"] = schema["description"]
        flat[name] = entry
    return flat


def _short_type(schema_type):
    # "string" is spelled "str"; of a list of types the first that is not "null" counts.
    if isinstance(schema_type, list):
        schema_type = next((t for t in schema_type if isinstance(t, str) and t != "null"), "null")
    return "str" if schema_type == "string" else schema_type


def _parse_tools_in_messages(messages, flatten: bool) -> bool:
    """Phi-4-mini style: a message's "tools" is a JSON string; parse it in place. Tell whether any had one."""
    found = False
    for message in messages if isinstance(messages, list) else []:
        if isinstance(message, dict) and "tools" in message:
            if not isinstance(message["tools"], str):
                raise ChatTemplateError("a message's 'tools' must be a JSON string, got "
                                        f"{type(message['tools']).__name__}")
            message["tools"] = _parse_tools(message["tools"], "a message's 'tools'", flatten)
            found = True
    return found


def _normalize_tool_quotes(text: str) -> str:
    """The peer's fix-up after rendering messages that carry tools: a single quote next to one of '{:, '
    (before it) or '}:, ' (after it) becomes a double quote, so Python-repr'd tool JSON reads as JSON."""
    chars = list(text)
    for i, char in enumerate(text):
        if char != "'":
            continue
        before = text[i - 1] if i > 0 else ""
        after = text[i + 1] if i + 1 < len(text) else ""
        if (before and before in "{:, ") or (after and after in "}:, "):
            chars[i] = '"'
    return "".join(chars)


@functools.lru_cache(maxsize=16)  # chat renders a folder's one template again and again
def _compile(template: str) -> jinja2.Template:
    try:
        return _ENVIRONMENT.from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise ChatTemplateError(f"chat template syntax error at line {e.lineno}: {e.message}") from None


def _raise_exception(message):
    raise jinja2.TemplateError(message)


def _strftime_now(format="%Y-%m-%d"):
    return datetime.datetime.now().strftime(format)


def _tojson(value, indent=None, separators=None, sort_keys=False):
    if isinstance(value, jinja2.Undefined):
        value = None  # minja writes an undefined value as null
    return json.dumps(value, ensure_ascii=False, indent=indent, separators=separators, sort_keys=sort_keys)


def _make_environment() -> jinja2.Environment:
    # Sandboxed and immutable as in transformers: a template comes with a downloaded model and must not
    # reach Python internals or mutate the messages it is given.
    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(
        extensions=["jinja2.ext.loopcontrols"],
        finalize=lambda value: "" if value is None else value,
    )
    environment.filters["tojson"] = _tojson
    environment.globals["raise_exception"] = _raise_exception
    environment.globals["strftime_now"] = _strftime_now
    return environment


_ENVIRONMENT = _make_environment()
