"""Small model configs shared by the training tests (fast to build and run on a CPU)."""
from admlops_ros.training.configs import KITTI_3CLASS

# KITTI-3class semantics on a 10 m x 10 m grid with 16 PFN units and thin SECOND/FPN layers.
TINY = KITTI_3CLASS.replace(
    name="tiny", point_cloud_range=(0.0, -5.12, -3.0, 10.24, 5.12, 1.0),
    voxel_size=(0.32, 0.32, 4.0), max_points=8, max_voxels=(500, 500), feat_channels=(16,),
    layer_nums=(1, 1, 1), out_channels=(8, 16, 16), fpn_out_channels=(8, 8, 8),
    anchor_ranges=((0.0, -5.12, -0.6, 10.24, 5.12, -0.6),) * 2
    + ((0.0, -5.12, -1.78, 10.24, 5.12, -1.78),))
