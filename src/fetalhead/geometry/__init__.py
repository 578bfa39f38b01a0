"""Geometry: ellipses and the letterbox between image and network coordinates."""
