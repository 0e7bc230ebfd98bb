"""The shrink pipeline: policy check → subset → mask → scan → dump → publish."""
