"""The lidar pipeline: PointCloud2 -> points -> voxels -> engine -> heads -> Detections."""
