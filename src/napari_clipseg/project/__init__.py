"""The annotation loop: a folder of images turned into a verified training set (issue 20)."""
