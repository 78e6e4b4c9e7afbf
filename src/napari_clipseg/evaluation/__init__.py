"""Scoring predictions against ground truth: metrics (IoU, Dice, AP, matting errors) and ``evaluate``."""
