"""PyTorch side (the only place torch is imported): PointPillars reference, export, training.

``configs`` and ``flops`` are torch-free; every other module needs torch.
"""
