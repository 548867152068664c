"""Image processing on SimpleITK volumes: regions of interest."""
