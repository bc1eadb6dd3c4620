"""Data in: scan a folder, decode images once, cache them, build batches."""
