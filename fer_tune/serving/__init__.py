"""Serving: from image files to emotions with a registered model.

model (load a registry URI or a downloaded folder) and images (read, find the face, crop).
"""
