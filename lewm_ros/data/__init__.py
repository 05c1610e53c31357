"""Episode datasets: simulated collection, rosbag2 import, clip sampling (no ROS imports)."""
