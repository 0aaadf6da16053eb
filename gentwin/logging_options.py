"""The peer's run log (set_log_options, set_log_callback), written through Python's `logging`.

onnxruntime-genai can trace a run: each switch of set_log_options names one kind of entry, and every entry
starts with that name as a label ("  generate_next_token   do_sample: 0 top_k: 50 ..."). gentwin writes the
same entries, in the peer's formats, to the logger `gentwin.run_log`, whose one handler sends them where
the peer would:

- to stderr (whatever sys.stderr is at the time), until told otherwise;
- to a file, once set_log_options(filename=...) names one, truncated (a callback set is dropped, as in the
  peer); filename="" closes it: stderr again;
- to a function, once set_log_callback(fn) names one (a file open is closed, as in the peer); None drops
  it: stderr again. The function gets each line as the peer passes it: a str ending in "\\n".
ANSI colour codes are in the text wherever it goes, unless ansi_tags is off, as in the peer.

Nothing is written unless `enabled` is on. Programs may add handlers of their own to the logger.
gentwin sends no telemetry: enable_telemetry_events and disable_telemetry_events are accepted and do nothing.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

import numpy as np

from gentwin.errors import GentwinError

# The options the peer knows (src/logging.h), with its defaults: switches, and the one string option.
FLAG_DEFAULTS = {
    "enabled": False, "ansi_tags": True, "warning": True, "generate_next_token": False, "append_next_tokens": False,
    "hit_eos": False, "hit_max_length": False, "model_input_values": False, "model_output_shapes": False,
    "model_output_values": False, "model_logits": False, "ort_lib": False, "value_stats": True,
}
FLAG_OPTIONS = tuple(FLAG_DEFAULTS)
STRING_OPTIONS = ("filename",)

# ANSI SGR codes the peer wraps parts of an entry in when ansi_tags is on.
RESET, BOLD, FG_GREEN, FG_CYAN, BG_YELLOW, BG_BLUE, BG_RED = 0, 1, 32, 36, 43, 44, 41
VALUES_SHOWN = 10  # a tensor longer than this shows its first and last 5 values, "..." between

logger = logging.getLogger("gentwin.run_log")
logger.propagate = False  # the entries go where set_log_options says, not also to the root logger's handlers
logger.setLevel(logging.INFO)

log_options: dict[str, bool | str] = {**FLAG_DEFAULTS, "filename": ""}


class StderrHandler(logging.StreamHandler):
    """Writes to sys.stderr as it is when an entry is written, so a program (or pytest) replacing it sees
    the entries, as logging's own last-resort handler does."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass  # StreamHandler sets it once; sys.stderr is read at each entry instead


class CallbackHandler(logging.Handler):
    """Hands each entry's line, with its newline, to a function (set_log_callback)."""

    def __init__(self, callback: Callable[[str], object]):
        super().__init__()
        self.callback = callback

    def emit(self, record: logging.LogRecord) -> None:
        self.callback(self.format(record) + "\n")


def _destination() -> logging.Handler:
    """The one handler set_log_options and set_log_callback choose."""
    return next(handler for handler in logger.handlers if getattr(handler, "gentwin_destination", False))


def _replace_handler(handler: logging.Handler) -> None:
    for old in [h for h in logger.handlers if getattr(h, "gentwin_destination", False)]:
        logger.removeHandler(old)
        old.close()
    handler.gentwin_destination = True
    logger.addHandler(handler)


_replace_handler(StderrHandler())


def set_log_options(**options) -> None:
    for name, value in options.items():  # every option checked before any is applied
        if name in FLAG_OPTIONS:
            if not isinstance(value, bool):
                raise TypeError(f"log option {name!r} takes a bool, got {value!r}")
        elif name in STRING_OPTIONS:
            if not isinstance(value, str):
                raise TypeError(f"log option {name!r} takes a str, got {value!r}")
        else:
            raise GentwinError(f"unknown log option {name!r}; known: {', '.join(FLAG_OPTIONS + STRING_OPTIONS)}")
    if "filename" in options:  # first: a file that cannot be opened leaves every option as it was
        _set_file(options["filename"])
    log_options.update(options)


def _set_file(filename: str) -> None:
    """A file replaces the callback, as in the peer. No file closes the one open: stderr again, unless a
    callback is set."""
    if filename:
        try:
            handler = logging.FileHandler(filename, mode="w", encoding="utf-8")
        except OSError as error:
            raise GentwinError(f"set_log_options: cannot open the log file {filename!r}: {error}") from error
        _replace_handler(handler)
    elif isinstance(_destination(), logging.FileHandler):
        _replace_handler(StderrHandler())


def set_log_callback(callback: Callable[[str], object] | None) -> None:
    """A callback replaces the file, as in the peer; None drops the callback: stderr again."""
    if callback is not None and not callable(callback):
        raise TypeError(f"set_log_callback takes a function or None, got {type(callback).__name__}")
    if callback is not None:
        log_options["filename"] = ""
        _replace_handler(CallbackHandler(callback))
    elif isinstance(_destination(), CallbackHandler):
        _replace_handler(StderrHandler())


def enable_telemetry_events() -> None:
    """Accepted; gentwin has no telemetry."""


def disable_telemetry_events() -> None:
    """Accepted; gentwin has no telemetry."""


# -- writing entries ---------------------------------------------------------------------------------


def wanted(option: str) -> bool:
    """Whether entries of kind OPTION are written now."""
    return bool(log_options["enabled"] and log_options[option])


def _sgr(code: int) -> str:
    return f"\x1b[{code}m" if log_options["ansi_tags"] else ""


def _label(label: str) -> str:
    """An entry's start: its label, bold on blue (yellow for warnings)."""
    background = BG_YELLOW if label == "warning" else BG_BLUE
    return f"{_sgr(BOLD)}{_sgr(background)}  {label}  {_sgr(RESET)} "


def green(text: str) -> str:
    return f"{_sgr(FG_GREEN)}{text}{_sgr(RESET)}"


def cyan(text: str) -> str:
    return f"{_sgr(FG_CYAN)}{text}{_sgr(RESET)}"


def write_line(text: str) -> None:
    """One line of the log, as it is (it is one record of the logger)."""
    logger.info(text)


def write(label: str, text: str = "") -> None:
    """One entry: LABEL, then TEXT, on one line."""
    write_line(_label(label) + text)


def write_tokens(label: str, tokens: np.ndarray) -> None:
    """An entry listing token ids, each followed by a space, as the peer lists them."""
    write(label, "".join(f"{int(token)} " for token in tokens))


def number(value) -> str:
    """VALUE as C++'s ostream prints it: integers whole, floats with 6 significant digits."""
    if isinstance(value, (bool, np.bool_)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return f"{float(value):g}"
    return str(int(value))


def _values(flat: np.ndarray) -> str:
    """The values of FLAT [N], the first and last few of a long one."""
    half = VALUES_SHOWN // 2
    listed = [number(v) for v in flat] if flat.size <= VALUES_SHOWN else (
        [number(v) for v in flat[:half]] + ["..."] + [number(v) for v in flat[-half:]])
    return green("Values[ ") + "".join(f"{v} " for v in listed) + green("]")


def _stats(flat: np.ndarray) -> str:
    """Min and max (the first index of each; NaN never is one), mean and standard deviation, summed as the
    peer sums them: one value after the other, in float32 (cumsum adds in order; sum would add pairwise)."""
    values = flat.astype(np.float32)                                                      # [N]
    total = np.cumsum(values, dtype=np.float32)[-1]
    squares = np.cumsum(values * values, dtype=np.float32)[-1]
    count = np.float32(values.size)
    mean = total / count
    with np.errstate(invalid="ignore"):
        deviation = np.sqrt((squares - total * total / count) / count)
    comparable = np.where(np.isnan(values), np.inf, values), np.where(np.isnan(values), -np.inf, values)
    low, high = int(comparable[0].argmin()), int(comparable[1].argmax())
    text = (f"{cyan(' Min: ')}{number(values[low])} at index[{low}]"
            f"{cyan(' Max: ')}{number(values[high])} at index[{high}]"
            f"{cyan(' Mean: ')}{number(mean)}{cyan(' StdDev: ')}{number(deviation)}")
    unusable = np.flatnonzero(~np.isfinite(values))
    if unusable.size:  # the peer counts this index from 1
        text += (f" {_sgr(BG_RED)}First non-finite value at index {int(unusable[0]) + 1}: {number(values[unusable[0]])}"
                 f" Count of non-finite values: {unusable.size}{_sgr(RESET)}")
    return text


def write_values(label: str, values: np.ndarray) -> None:
    """An entry listing VALUES (ending the line), then, with value_stats on and float values, their stats."""
    flat = np.asarray(values).reshape(-1)                                                 # [N]
    if flat.size == 0:
        return
    write_line((_label(label) if label else "") + _values(flat))
    if log_options["value_stats"] and np.issubdtype(flat.dtype, np.floating):
        write("value_stats", _stats(flat))


def write_tensors(label: str, tensors: dict, with_values: bool) -> None:
    """A model run's tensors, by name: shape, type and (WITH_VALUES) values and their stats."""
    write(label)
    for name, tensor in tensors.items():
        tensor = np.asarray(tensor)
        dims = "".join(f"{d} " for d in tensor.shape)
        write_line(f"{green('Name: ')}{name} {green(f'ShapeDims[ {tensor.ndim}]')}{green('Shape[ ')}{dims}"
                    f"{green(']')}{green(' Type: ')}{tensor.dtype.name}"  # numpy's names are the peer's
                    f"{green(' Location: ')}CPU\r")  # the peer ends this part with \r\n
        if with_values:
            write_values("", tensor)
