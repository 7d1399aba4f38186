"""The data set: download, read, split, z-score statistics, augmentation, batches in memory.

Imports only the shared top-level modules (errors, atomic).
"""
