"""Snapshot stores and the snapshot format."""
