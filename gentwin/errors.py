"""The exceptions gentwin raises, and the argument checks every public method shares.

Every error names the problem; all derive from GentwinError. A public method checks all its arguments
with these before it changes anything, so a refused call leaves its object exactly as it was.
"""

from __future__ import annotations

import numpy as np


class GentwinError(RuntimeError):
    """Base class. A RuntimeError, as onnxruntime-genai raises, so code written for the peer catches it too."""


class ArgumentTypeError(GentwinError, TypeError):
    """An argument of the wrong type: a float or a bool where an int is needed, a number where a str is."""


class ArgumentValueError(GentwinError, ValueError):
    """An argument of the right type whose value cannot be used: out of range, ragged, not finite, ..."""


class ArgumentIndexError(GentwinError, IndexError):
    """An index outside the rows there are."""


def shown(value) -> str:
    """A value's type and a short repr of it, for error messages: "float 4.0"."""
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 60 else text[:57] + '...'}"


def integer(value, what: str) -> int:
    """VALUE as a Python int. Python ints and numpy integer scalars are ints; bool, float (even 4.0), None and
    str are not: a float may have been rounded on the way, and True is rarely meant as 1."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise ArgumentTypeError(f"{what} must be an int, got {shown(value)}")
    return int(value)


def boolean(value, what: str) -> bool:
    """VALUE as a Python bool: True, False or a numpy bool; 0, 1 and None are not bools."""
    if not isinstance(value, (bool, np.bool_)):
        raise ArgumentTypeError(f"{what} must be a bool, got {shown(value)}")
    return bool(value)


def text(value, what: str) -> str:
    """VALUE, a str that UTF-8 can encode: a lone surrogate (U+D800 to U+DFFF) cannot be encoded."""
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{what} must be a str, got {shown(value)}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ArgumentValueError(f"{what} is not valid Unicode: a lone surrogate U+{ord(value[error.start]):04X} "
                                 f"at index {error.start}") from None
    return value


def array(value, what: str) -> np.ndarray:
    """VALUE as a numpy array (from a list, a Tensor, ...); a ragged list is refused, not made an object array."""
    try:
        return np.asarray(value)
    except ValueError:
        raise ArgumentValueError(f"{what} must be a rectangular array; got ragged nested sequences") from None
