"""gentwin.conformance: scenario scripts and `gentwin check`, for any module offering onnxruntime-genai's API."""
