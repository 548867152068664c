"""Limits that guard readers against absurd inputs: the ground floor, importing nothing.

Imaging, fetch and the settings all take their defaults from here, so reading a series
never pulls in the settings module for one constant.
"""

# 512 x 512 x 4096: 4 GiB once decoded to float32. What a header declares beyond this is
# refused before any pixel is read, so one forged file cannot take a worker's memory.
DEFAULT_MAX_SERIES_VOXELS = 2**30
