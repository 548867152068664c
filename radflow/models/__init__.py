"""Model training, patient-level splitting and evaluation."""
