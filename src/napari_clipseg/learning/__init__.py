"""Learning from corrections: training pairs, cached features, fine-tuning the decoder."""
