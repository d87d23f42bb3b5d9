"""The data loop: record, export, analyse and mine datasets from what the vehicle sees.

Tooling above the runtime: it may import evaluation/, simulation/ and the runtime packages, and
nothing in the runtime imports it (docs/architecture.md).
"""
