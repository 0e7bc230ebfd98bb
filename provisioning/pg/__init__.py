"""PostgreSQL plumbing: clusters, programs, restore, quoting, the activity probe, DSNs."""
