"""rospy adapters over the ROS-free core: nodes, messages, markers, diagnostics, params."""
