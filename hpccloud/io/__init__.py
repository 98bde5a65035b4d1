"""HDF5 input and per-region output, checkpoints, atomic writes."""
