"""The exceptions gentwin raises. Every one names the problem; all derive from GentwinError."""


class GentwinError(RuntimeError):
    """Base class. A RuntimeError, as onnxruntime-genai raises, so code written for the peer catches it too."""
