"""DICOM: index raw files into studies and series, and de-identify them."""
