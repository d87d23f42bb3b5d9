"""The KITTI 3-class PointPillars spec (mmdet3d numbers) as a spec.yaml mapping, for tests."""

KITTI = {
    "format_version": 1, "name": "pointpillars_kitti_3class", "family": "pointpillars",
    "class_names": ["Pedestrian", "Cyclist", "Car"],
    "input": {"point_features": ["x", "y", "z", "intensity"], "intensity_scale": 1.0},
    "voxelization": {"voxel_size": [0.16, 0.16, 4.0],
                     "point_cloud_range": [0.0, -39.68, -3.0, 69.12, 39.68, 1.0],
                     "max_points": 32, "max_voxels": 40000},
    "anchors": {"ranges": [[0, -39.68, -0.6, 69.12, 39.68, -0.6]] * 2
                + [[0, -39.68, -1.78, 69.12, 39.68, -1.78]],
                "sizes": [[0.8, 0.6, 1.73], [1.76, 0.6, 1.73], [3.9, 1.6, 1.56]],
                "rotations": [0.0, 1.57], "align_corner": False, "feature_map_size": [248, 216]},
    "box_coder": {"type": "DeltaXYZWLHRBBoxCoder", "code_size": 7},
    "head": {"use_direction_classifier": True, "dir_offset": -1.5707963267948966,
             "dir_limit_offset": 0.0},
    "test_cfg": {"use_rotate_nms": True, "nms_thr": 0.01, "score_thr": 0.1, "nms_pre": 100,
                 "max_num": 50},
    "engine": {"output_layout": "mmdeploy-1.2",
               "tensorrt_profile": {"min": 2000, "opt": 5000, "max": 9000}},
}
