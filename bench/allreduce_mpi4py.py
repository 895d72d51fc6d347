#!/usr/bin/env python3
"""OpenMPI's all-reduce timed the way `tusk allreduce-perf` times tusk's: run under mpirun.

    mpirun -np 2 [--mca btl self,vader | --mca btl self,tcp] python bench/allreduce_mpi4py.py 4194304 67108864

Per size (bytes): f32 sum, in place, 2 untimed iterations then 20 timed, a barrier before
each; rank 0 prints one JSON object per size with the median and minimum seconds.
"""
import json
import sys
import time

import numpy as np
from mpi4py import MPI

comm = MPI.COMM_WORLD
for arg in sys.argv[1:]:
    size = int(arg)
    buf = np.ones(size // 4, dtype=np.float32)
    times = []
    for i in range(22):
        comm.Barrier()
        t = time.perf_counter()
        comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        if i >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    if comm.Get_rank() == 0:
        print(json.dumps({"bytes": size, "ranks": comm.Get_size(),
                          "median_s": times[len(times) // 2], "min_s": times[0]}), flush=True)
