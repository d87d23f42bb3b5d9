"""The lidar pipeline: PointCloud2 -> points -> voxels -> engine -> heads (decode, NMS) -> Detections."""
