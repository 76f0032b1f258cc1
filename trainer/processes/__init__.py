"""Starting processes: worker ranks, their supervision, hostfiles, BLAS."""
