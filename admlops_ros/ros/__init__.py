"""rospy adapters over the ROS-free core: nodes, message conversions, markers, diagnostics, params."""
