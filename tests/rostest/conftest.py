"""pytest must not collect the rostest node script (it needs the master rostest starts)."""
collect_ignore = ["test_lidar_detection.py", "test_camera_detection.py", "rostest_recorder.py"]
