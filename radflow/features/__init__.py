"""Radiomic features computed from an image and a lesion mask."""
