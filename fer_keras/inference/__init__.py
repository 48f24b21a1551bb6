"""Detect -> align -> model -> labels."""
