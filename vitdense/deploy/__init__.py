"""Production: export (safetensors + config, or ONNX with dynamic H and W for every task), the ONNX runner and int8
quantization (``onnx_runner``), and the LitServe server (``serve``). ``graph`` holds the contract every exported graph
keeps; ``export`` (segmentation, classification) and ``export_detection`` (detectors, Mask R-CNN) build on it."""

from vitdense.deploy.export import (
    example_size,
    export_onnx,
    export_safetensors,
    inference_config,
    inference_copy,
    load,
    load_for_inference,
    onnx_metadata,
)

__all__ = [
    "example_size",
    "export_onnx",
    "export_safetensors",
    "inference_config",
    "inference_copy",
    "load",
    "load_for_inference",
    "onnx_metadata",
]
