"""Deployment tooling: engine builds from a bundle (TensorRT plans, OpenVINO IR) and their CLI."""
