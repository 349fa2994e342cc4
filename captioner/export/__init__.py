"""Exports of a model package for other runtimes: ONNX (`captioner.export.onnx`); the transformers folder is
`captioner.hf`."""
