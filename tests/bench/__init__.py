"""``make bench``: fsx-stage against s5cmd, the aws CLI and rclone on a loopback SeaweedFS."""
