"""A 3-D segmentation model that finds the region of interest in a study nobody annotated.

MONAI's U-Net, Dice+CE loss and sliding-window inferer (the field's kept components); radflow
adds what MONAI leaves to its users: patch sampling seeded per (seed, epoch, sample), an atomic
checkpoint per epoch with resume, data-parallel training on CPU (gloo) or GPUs (NCCL), the
post-processing a clinical pipeline needs (largest plausible component, volume checks) and the
evaluation a model card reports (Dice, HD95, surface Dice, detection, false-positive volume).
"""
