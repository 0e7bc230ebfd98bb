"""Everything devdb does on AWS: EC2 spot environments, S3 snapshots, SSM passwords."""
