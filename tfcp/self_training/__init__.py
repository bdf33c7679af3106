"""Self-training Copy-Paste (paper Sec. 4.4): pseudo-labeling unlabeled images."""
