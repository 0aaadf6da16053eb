"""onnxruntime-genai's Tokenizer and TokenizerStream, on Hugging Face `tokenizers` and jinja2.

Encoding is the `tokenizers` library on the folder's tokenizer.json, with no BOS/EOS added (the peer's
default; update_options(add_special_tokens=True) adds them by the peer's rule, see _bos_eos_policy).

Decoding follows the peer (whose tokenizer is onnxruntime-extensions), which differs from
`tokenizers.Tokenizer.decode`: each token becomes bytes on its own and the text is those bytes joined, so
decode and the stream agree token by token.

- Byte-level BPE (GPT-2, Llama 3, Qwen...): a vocabulary piece maps back to bytes through GPT-2's byte
  alphabet; an added token is its content.
- SentencePiece-style (tokenizer.json's decoder is a Sequence with a Replace or Metaspace of "▁"): "▁" is a
  space, "<0xNN>" is one byte. The leading space of the first piece is kept (' Hello', where transformers
  strips it to 'Hello'); it is dropped only right after a special token (after <s>, 'Hello').
- Special tokens decode to '' by default (update_options(skip_special_tokens=False) keeps them, except in
  SentencePiece-style tokenizers, where the peer always drops them).
- Ids the model can produce but the tokenizer lacks (model vocab_size above the tokenizer's size) decode to
  '' (to the unknown token in SentencePiece-style tokenizers, or with skip_special_tokens off).
- When tokenizer_config.json has clean_up_tokenization_spaces, the stream (only the stream) puts a space
  after each special token other than tokenizer_config.json's eos_token, and before a special first token.

Differences from the peer, on purpose:
- Invalid UTF-8 (a lone continuation byte, a truncated sequence) decodes to U+FFFD replacement characters
  where it sits, as Python's bytes.decode(errors="replace") does; the peer cuts the text at the first bad
  byte and appends one U+FFFD. The stream emits the same replacements once the bytes are known to be bad
  (the peer's stream drops them, and with them a valid byte that follows a broken lead byte).
- A token list whose text is empty (only special tokens) decodes to '', where the peer returns '\ufffd'.
- NUL is a character like any other; the peer's C strings end there (encode('a\x00b') encodes 'a', decode
  stops at a NUL byte, the stream returns '' for it).
- Bad input raises: ids outside [0, vocab) (vocab: the larger of the model's and the tokenizer's sizes),
  which the peer skips; non-integer or non 1-D tokens, which the peer casts or flattens; non-string text.
- encode_batch returns a 2-D int32 numpy array (the peer: an og.Tensor); decode_batch takes any 2-D
  integer array, or an object with as_numpy() such as og.Tensor.

And one the peer imposes: for SentencePiece-style BPE the peer encodes with its own BPE, which splits text
before digits, tabs and some punctuation where `tokenizers` (as transformers) merges across, so
encode('123456') differs there; gentwin keeps `tokenizers`. Byte-level BPE encodes identically.
"""

from __future__ import annotations

import codecs
import json
import os
import re

import numpy as np
import tokenizers

from gentwin import chat_template, errors
from gentwin.config import GenaiConfig, load_config
from gentwin.errors import GentwinError
from gentwin.sequences import check_vocabulary_range, right_padded

SPM_SPACE = "\u2581"  # "▁", SentencePiece's visible space
SPM_BYTE_PIECE = re.compile(r"<0x([0-9A-Fa-f]{2})>")

# Tokenizer classes (tokenizer_config.json's "tokenizer_class" up to "Tokenizer") that add a BOS by default
# when add_bos_token is absent and the post_processor does not name it.
BOS_BY_DEFAULT_CLASSES = {"Llama", "Phi3", "InternLM2", "Gemma", "CodeLlama", "Mistral"}

# genai_config.json may omit bot/eot/bor/eor token ids; the peer then falls back to these, by model type.
TAG_TOKEN_FALLBACKS = {
    "qwen2": {"bot_token_id": 151657, "eot_token_id": 151658},
    "qwen3": {"bot_token_id": 151657, "eot_token_id": 151658, "bor_token_id": 151667, "eor_token_id": 151668},
    "phi3": {"bot_token_id": 200025, "eot_token_id": 200026},
}

# gpt-oss (Harmony) needs its special tokens in the text: the peer never skips them when this token exists.
HARMONY_CHANNEL_TOKEN = (200005, "<|channel|>")

OPTION_NAMES = ("add_special_tokens", "skip_special_tokens")


class TokenizerError(GentwinError):
    """The tokenizer files are missing or malformed, or an option is unknown."""


def _byte_level_decoder() -> dict[str, int]:
    """GPT-2's byte alphabet, reversed: printable bytes stand for themselves, the others for chr(256 + n)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    decoder = {chr(byte): byte for byte in printable}
    others = [byte for byte in range(256) if byte not in printable]
    decoder.update({chr(256 + n): byte for n, byte in enumerate(others)})
    return decoder


BYTE_LEVEL_DECODER = _byte_level_decoder()


def _genai_config(model) -> GenaiConfig:
    """Accept what the peer's constructor accepts: a Model, a Config, or a model folder's path."""
    if isinstance(model, GenaiConfig):
        return model
    if isinstance(model, (str, os.PathLike)):
        return load_config(model)
    for attribute in ("config", "genai"):  # gentwin's Model.config, gentwin's Config.genai
        config = getattr(model, attribute, None)
        if isinstance(config, GenaiConfig):
            return config
    raise TypeError(f"Tokenizer needs a Model, a Config or a model folder path, got {type(model).__name__}")


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise TokenizerError(f"missing {os.path.basename(path)} in model folder {os.path.dirname(path)!r}")
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TokenizerError(f"{path}: not valid JSON ({e})") from None


def _load_hf_tokenizer(tokenizer_json: dict, folder: str) -> tokenizers.Tokenizer:
    try:
        return tokenizers.Tokenizer.from_str(json.dumps(tokenizer_json))
    except Exception as e:  # the tokenizers library raises a bare Exception for a malformed tokenizer.json
        raise TokenizerError(f"{folder}/tokenizer.json: the tokenizers library cannot load it ({e})") from None


def _token_string(tokenizer_config: dict, key: str) -> str:
    """tokenizer_config.json names a special token by its string or by an AddedToken dict."""
    value = tokenizer_config.get(key)
    if isinstance(value, dict):
        return value.get("content", "")
    return value if isinstance(value, str) else ""


def _is_sentencepiece_style(decoder: dict | None) -> tuple[bool, bool]:
    """(SentencePiece-style pieces, strip the dummy prefix space after a special token), as the peer reads
    tokenizer.json's decoder: only the steps of a Sequence count."""
    sentencepiece, dummy_prefix = False, False
    for step in (decoder or {}).get("decoders") or []:
        kind = step.get("type")
        if kind == "Replace" and (step.get("pattern") or {}).get("String") == SPM_SPACE:
            sentencepiece = True
        elif kind == "Metaspace":
            sentencepiece = sentencepiece or step.get("replacement") == SPM_SPACE
            dummy_prefix = dummy_prefix or bool(step.get("add_prefix_space"))
        elif kind == "Strip" and step.get("content") == " ":
            dummy_prefix = True
    return sentencepiece, dummy_prefix


def _bos_eos_policy(tokenizer_config: dict, tokenizer_json: dict, bos: str, eos: str) -> tuple[bool, bool]:
    """Whether encode adds BOS and EOS when add_special_tokens is on, by the peer's rule.

    add_bos_token/add_eos_token from tokenizer_config.json; when add_bos_token is absent, BOS (and, if
    add_eos_token is absent too, EOS) is added when the post_processor names it, else BOS by tokenizer class;
    when add_bos_token is false, a post_processor naming BOS or EOS still turns them on.
    """
    add_bos, add_eos = tokenizer_config.get("add_bos_token"), tokenizer_config.get("add_eos_token")
    bos_explicit, eos_explicit = isinstance(add_bos, bool), isinstance(add_eos, bool)
    add_bos, add_eos = add_bos is True, add_eos is True
    if not bos:
        return add_bos, add_eos
    has_post_processor = "post_processor" in tokenizer_json
    post_processor = json.dumps(tokenizer_json.get("post_processor"), ensure_ascii=False)
    names_bos = has_post_processor and bos in post_processor
    names_eos = has_post_processor and bool(eos) and eos in post_processor
    if not bos_explicit:
        tokenizer_class = tokenizer_config.get("tokenizer_class", "")
        add_bos = names_bos or tokenizer_class.split("Tokenizer")[0] in BOS_BY_DEFAULT_CLASSES
        add_eos = add_eos or (not eos_explicit and names_eos)
    elif not add_bos:
        add_bos, add_eos = names_bos, add_eos or names_eos
    return add_bos, add_eos


class _Pieces:
    """Each token id's bytes, as the peer's detokenizer makes them."""

    def __init__(self, hf: tokenizers.Tokenizer, tokenizer_json: dict, tokenizer_config: dict):
        self.hf = hf
        added = hf.get_added_tokens_decoder()
        self.added = {token_id: token.content for token_id, token in added.items()}
        self.special_ids = {token_id for token_id, token in added.items() if token.special}
        self.sentencepiece, self.dummy_prefix = _is_sentencepiece_style(tokenizer_json.get("decoder"))
        self.unk_token = _token_string(tokenizer_config, "unk_token")
        self.never_skip = self.added.get(HARMONY_CHANNEL_TOKEN[0]) == HARMONY_CHANNEL_TOKEN[1]
        self._vocab_bytes: dict[int, bytes | None] = {}

    def piece(self, token_id: int, after_special: bool, skip_special: bool) -> tuple[bytes, bool]:
        """(bytes of `token_id`, whether it is a special token). `after_special`: the previous token was."""
        if self.sentencepiece:
            return self._sentencepiece_piece(token_id, after_special)
        is_special = token_id in self.special_ids
        if is_special and skip_special and not self.never_skip:
            return b"", True
        if token_id in self.added:
            return self.added[token_id].encode(), is_special
        vocab_bytes = self._vocab_piece(token_id)
        if vocab_bytes is None:
            return (b"" if skip_special else self.unk_token.encode()), is_special
        return vocab_bytes, is_special

    def _sentencepiece_piece(self, token_id: int, after_special: bool) -> tuple[bytes, bool]:
        is_special = token_id in self.special_ids
        if token_id in self.added:
            data = b"" if is_special else self.added[token_id].encode()
        else:
            data = self._vocab_piece(token_id)
            if not data:
                data = self.unk_token.encode()
        if after_special and self.dummy_prefix and data.startswith(b" "):
            data = data[1:]
        return data, is_special

    def _vocab_piece(self, token_id: int) -> bytes | None:
        if token_id not in self._vocab_bytes:
            text = self.hf.id_to_token(token_id)
            if text is None:
                self._vocab_bytes[token_id] = None
            elif self.sentencepiece:
                self._vocab_bytes[token_id] = self._sentencepiece_bytes(text)
            else:
                self._vocab_bytes[token_id] = b"".join(self._byte_level_bytes(char) for char in text)
        return self._vocab_bytes[token_id]

    @staticmethod
    def _sentencepiece_bytes(text: str) -> bytes:
        byte_piece = SPM_BYTE_PIECE.fullmatch(text)
        if byte_piece:
            return bytes([int(byte_piece.group(1), 16)])
        return text.replace(SPM_SPACE, " ").encode()

    @staticmethod
    def _byte_level_bytes(char: str) -> bytes:
        # A character outside the byte alphabet stands for itself: one raw byte below 256 (as the peer
        # does), its UTF-8 bytes above (where the peer fails).
        if char in BYTE_LEVEL_DECODER:
            return bytes([BYTE_LEVEL_DECODER[char]])
        return bytes([ord(char)]) if ord(char) < 256 else char.encode()


class Tokenizer:
    """Text to token ids and back for a model folder (onnxruntime_genai.Tokenizer).

    Tokenizer(model): a Model, a Config, or a model folder's path. See the module docstring for how decoding
    follows the peer and where it differs on purpose.
    """

    def __init__(self, model):
        self._config = _genai_config(model)
        folder = self._config.folder
        tokenizer_json = _read_json(os.path.join(folder, "tokenizer.json"))
        tokenizer_config = _read_json(os.path.join(folder, "tokenizer_config.json"))
        self._hf = _load_hf_tokenizer(tokenizer_json, folder)
        self._pieces = _Pieces(self._hf, tokenizer_json, tokenizer_config)
        self._bos_token = _token_string(tokenizer_config, "bos_token")
        self._eos_token = _token_string(tokenizer_config, "eos_token")
        self._add_bos, self._add_eos = _bos_eos_policy(tokenizer_config, tokenizer_json,
                                                       self._bos_token, self._eos_token)
        self._clean_up_spaces = bool(tokenizer_config.get("clean_up_tokenization_spaces", False))
        self._eos_token_id = self._hf.token_to_id(self._eos_token) if self._eos_token else None
        self._chat_template = chat_template.load_default_template(folder, tokenizer_config)
        self._vocab_size = max(self._hf.get_vocab_size(with_added_tokens=True), self._config.vocab_size)
        self._options = {"add_special_tokens": False, "skip_special_tokens": True}

    # -- token ids of the model --------------------------------------------------------------------------

    @property
    def bos_token_id(self) -> int:
        return self._config.bos_token_id

    @property
    def eos_token_ids(self) -> np.ndarray:
        return np.array(self._config.eos_token_ids, dtype=np.int32)

    @property
    def pad_token_id(self) -> int:
        return self._config.pad_token_id

    @property
    def bot_token_id(self) -> int:
        """Begin-of-tool-call token: genai_config.json's model.bot_token_id, else the peer's per-type id."""
        return self._tag_token_id("bot_token_id")

    @property
    def eot_token_id(self) -> int:
        """End-of-tool-call token."""
        return self._tag_token_id("eot_token_id")

    @property
    def bor_token_id(self) -> int:
        """Begin-of-reasoning token."""
        return self._tag_token_id("bor_token_id")

    @property
    def eor_token_id(self) -> int:
        """End-of-reasoning token."""
        return self._tag_token_id("eor_token_id")

    def _tag_token_id(self, name: str) -> int:
        token_id = self._config.raw["model"].get(name)
        if token_id is None:
            token_id = TAG_TOKEN_FALLBACKS.get(self._config.model_type, {}).get(name)
        if token_id is None:
            raise GentwinError(f"{name} is not defined for this model")
        return int(token_id)

    # -- options -----------------------------------------------------------------------------------------

    def update_options(self, **options) -> None:
        """Set add_special_tokens (default False) and skip_special_tokens (default True).

        Values are read as the peer does: as text, where 'false' and '0' (any case) are False and anything
        else is True. A value must be a bool, an int or a str (the peer's str() of None or a list would read
        as True). All options are checked before any is set.
        """
        if not options:
            raise TokenizerError("update_options: no options given")
        unknown = sorted(set(options) - set(OPTION_NAMES))
        if unknown:
            raise TokenizerError(f"invalid tokenizer option key: {unknown[0]} (known: {', '.join(OPTION_NAMES)})")
        self._options.update({name: _option_value(name, value) for name, value in options.items()})

    # -- encoding ----------------------------------------------------------------------------------------

    def encode(self, text: str) -> np.ndarray:
        """Token ids of `text`, int32 [n]. No BOS/EOS unless update_options(add_special_tokens=True)."""
        return self._encode(errors.text(text, "encode: text"))

    def _encode(self, text: str) -> np.ndarray:
        ids = self._hf.encode(text, add_special_tokens=False).ids
        if self._options["add_special_tokens"]:
            ids = self._id_if(self._add_bos, self._bos_token) + ids + self._id_if(self._add_eos, self._eos_token)
        return np.array(ids, dtype=np.int32)

    def _id_if(self, wanted: bool, token: str) -> list[int]:
        token_id = self._hf.token_to_id(token) if wanted and token else None
        return [] if token_id is None else [token_id]

    def encode_batch(self, texts) -> np.ndarray:
        """Token ids of each text, int32 [len(texts), longest], padded on the right with pad_token_id."""
        if isinstance(texts, str) or not hasattr(texts, "__iter__"):
            raise errors.ArgumentTypeError(f"encode_batch: texts must be a sequence of str, got {errors.shown(texts)}")
        texts = list(texts)
        if not texts:
            raise errors.ArgumentValueError("encode_batch: no texts given")
        checked = [errors.text(one, f"encode_batch: texts[{i}]") for i, one in enumerate(texts)]
        return right_padded([self._encode(one) for one in checked], self.pad_token_id)

    def to_token_id(self, token: str) -> int:
        """The id of one vocabulary entry, spelled as in tokenizer.json ('Ġhello', '▁Hello'); -1 if none."""
        errors.text(token, "to_token_id: token")
        token_id = self._hf.token_to_id(token)
        return -1 if token_id is None else token_id

    # -- decoding ----------------------------------------------------------------------------------------

    def decode(self, tokens) -> str:
        """The text of a 1-D sequence of token ids; invalid UTF-8 becomes U+FFFD (the peer truncates there)."""
        data, after_special = [], False
        for token_id in self._check_ids(tokens, ndim=1, what="decode").tolist():
            piece, after_special = self._pieces.piece(token_id, after_special, self._options["skip_special_tokens"])
            data.append(piece)
        return b"".join(data).decode("utf-8", errors="replace")

    def decode_batch(self, tokens) -> list[str]:
        """The text of each row of a 2-D array of token ids (an og.Tensor-like object with as_numpy() too)."""
        if hasattr(tokens, "as_numpy"):
            tokens = tokens.as_numpy()
        return [self.decode(row) for row in self._check_ids(tokens, ndim=2, what="decode_batch")]

    def create_stream(self) -> TokenizerStream:
        return TokenizerStream(self)

    def _stream_piece(self, token_id: int, first: bool, after_special: bool) -> tuple[bytes, bool]:
        """(bytes of one streamed token, whether it is special)."""
        check_vocabulary_range(token_id, self._vocab_size, "TokenizerStream.decode: token")
        piece, is_special = self._pieces.piece(token_id, after_special, self._options["skip_special_tokens"])
        if is_special and self._clean_up_spaces:
            # The peer's stream (not its decode) spaces special tokens out under clean_up_tokenization_spaces.
            if first:
                piece = b" " + piece
            if token_id != self._eos_token_id:
                piece += b" "
        return piece, is_special

    def _check_ids(self, tokens, ndim: int, what: str) -> np.ndarray:
        ids = errors.array(tokens, f"{what}: tokens")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise errors.ArgumentTypeError(f"{what}: tokens must be integer token ids, got dtype {ids.dtype}")
        if ids.ndim != ndim:
            raise errors.ArgumentValueError(f"{what}: tokens must be a {ndim}-D array of token ids, "
                                            f"got {ids.ndim} dimensions")
        check_vocabulary_range(ids, self._vocab_size, f"{what}: tokens")
        return ids.astype(np.int64)

    # -- chat --------------------------------------------------------------------------------------------

    def apply_chat_template(self, messages: str, *, template_str: str | None = None, tools: str | None = None,
                            add_generation_prompt: bool = True) -> str:
        """Render the chat template for `messages`, a JSON string: a list of {"role", "content", ...}.

        template_str (if non-empty) replaces the folder's template; tools is a JSON string handed to the
        template as `tools`. See gentwin.chat_template for the rendering rules.
        """
        if template_str is not None:
            errors.text(template_str, "apply_chat_template: template_str")
        add_generation_prompt = errors.boolean(add_generation_prompt, "apply_chat_template: add_generation_prompt")
        return chat_template.render(template_str or self._chat_template, messages, tools, add_generation_prompt,
                                    self._bos_token, self._eos_token)


def _option_value(name: str, value) -> bool:
    """An update_options value, read as the peer reads it: as text, 'false' and '0' (any case) being False."""
    if not isinstance(value, (bool, np.bool_, int, np.integer, str)):
        raise errors.ArgumentTypeError(f"update_options: {name} must be a bool, an int or a str, "
                                       f"got {errors.shown(value)}")
    spelled = str(value)
    if not spelled:
        raise TokenizerError(f"update_options: empty value for {name}")
    return spelled.lower() not in ("false", "0")


class TokenizerStream:
    """Incremental decoding, one token at a time (onnxruntime_genai.TokenizerStream).

    decode(token) returns the text that token completes: '' while a UTF-8 character is still incomplete,
    then the whole character. The pieces join to Tokenizer.decode of the same tokens (but for the spaces the
    peer adds around special tokens when clean_up_tokenization_spaces is set, see the module docstring).
    """

    def __init__(self, tokenizer: Tokenizer):
        self._tokenizer = tokenizer
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._first = True
        self._after_special = False

    def decode(self, token) -> str:
        token = errors.integer(token, "TokenizerStream.decode: token")
        piece, self._after_special = self._tokenizer._stream_piece(token, self._first, self._after_special)
        self._first = False
        return self._utf8.decode(piece)
