"""Drivers: where environments run (local clusters now; EC2 and shared servers later)."""
