"""A pytest plugin (-p tools.peer_suite.device_checks) for every run: onnxruntime_genai's device checks
answered by the execution providers onnxruntime has.

The peer's wheel is built with WebGPU, OpenVINO and QNN support, so is_webgpu_available() and its siblings
say True on any machine, even where onnxruntime has none of those providers. The peer's test files choose
their devices from those checks when they are imported, and would then parametrize every model test over
openvino and webgpu, never cpu. Answered by onnxruntime's providers, all three runs test the CPU, under
the same test names. gentwin's checks already answer that way, so this changes nothing for them.
"""

import onnxruntime
import onnxruntime_genai as og

from gentwin.devices import DEVICE_PROVIDERS


def unavailable() -> bool:
    return False


def pytest_configure(config):
    providers = set(onnxruntime.get_available_providers())
    for device, provider in DEVICE_PROVIDERS.items():
        if provider not in providers:
            setattr(og, f"is_{device}_available", unavailable)
