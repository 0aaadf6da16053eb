"""gentwin: onnxruntime-genai's generate() API, twice (gentwin.reference in numpy, gentwin.fast on
onnxruntime), proven identical by gentwin.conformance. This package holds what both engines share."""
