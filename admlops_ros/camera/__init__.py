"""The camera pipeline (2D detection of mmdet models converted by mmdeploy); empty so far.

It uses the same bundles (bundle/), engine runners (backends/) and node conventions (ros/) as
the lidar pipeline; see docs/architecture.md, "A new modality".
"""
