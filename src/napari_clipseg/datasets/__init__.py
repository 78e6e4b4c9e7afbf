"""Whole datasets: the steps of one input, a dask.distributed cluster, the report, ``segment_dataset``."""
