"""Writing results: atomic files, prediction tables, submissions and overlays."""
