"""The rclpy nodes of lewm_ros: thin layers that convert messages and call the core."""
