"""Measurement from bags and KITTI files: AP (KITTI devkit semantics), latency, drops, reports."""
