"""SlotCon core: networks, grouping, inverse augmentation, losses, augmentation, inference, checkpoints.

Pure PyTorch; knows nothing of HTTP, SQL or FAISS.
"""

__version__ = "0.1.0"
