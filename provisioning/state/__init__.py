"""The state store and the embedded control cluster that hosts it by default."""
