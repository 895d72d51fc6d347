#!/usr/bin/env python3
"""PyTorch DistributedDataParallel peer for bench/distributed_bench.py: the NeuMF of
bench/neumf_bench.py (same model, init, Adam lr 1e-3) trained by N processes with the gloo
backend, sparse embedding gradients (nn.Embedding(sparse=True) + SparseAdam, which is what
DDP + gloo does best for large tables) and Adam for the dense layers; global batch 256
(256 / N rows per process). Run under torchrun:

    python -m torch.distributed.run --nproc-per-node 2 bench/ddp_neumf.py movielens u.data 3
    python -m torch.distributed.run --nproc-per-node 2 bench/ddp_neumf.py synthetic DIR 3

Rank 0 prints one JSON object: median samples/s over epochs (global rows per second of the
training loop; sampling and shuffling happen before it, untimed) and its peak RSS.
"""
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import neumf_bench as nb  # noqa: E402


def main():
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    case, data, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.set_num_threads(max(1, int(os.environ.get("THREADS_PER_RANK", "1"))))
    torch.manual_seed(nb.SEED)
    rng = np.random.default_rng(nb.SEED)
    it = nb.movielens_epochs(data, epochs, rng) if case == "movielens" else nb.synthetic_epochs(data, epochs, rng)
    n_users, n_items, _ = next(it)
    model = DDP(nb.build_model(torch, n_users, n_items, True))
    tables = [model.module.user.weight, model.module.item.weight]
    dense = [p for n, p in model.module.named_parameters() if not n.startswith(("user.", "item."))]
    opts = [torch.optim.SparseAdam(tables, lr=nb.LR), torch.optim.Adam(dense, lr=nb.LR)]
    loss_fn = torch.nn.BCEWithLogitsLoss()
    local = nb.BATCH // world
    rates = []
    for users, items, labels in it:
        u = torch.from_numpy(np.ascontiguousarray(users))
        i = torch.from_numpy(np.ascontiguousarray(items))
        y = torch.from_numpy(np.ascontiguousarray(labels))
        steps = len(u) // nb.BATCH
        dist.barrier()
        t0 = time.perf_counter()
        for s in range(steps):
            lo = s * nb.BATCH + rank * local
            for o in opts:
                o.zero_grad(set_to_none=True)
            loss = loss_fn(model(u[lo:lo + local], i[lo:lo + local]), y[lo:lo + local])
            loss.backward()
            for o in opts:
                o.step()
        dist.barrier()
        rates.append(steps * nb.BATCH / (time.perf_counter() - t0))
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    if rank == 0:
        print(json.dumps({"samples_per_sec": statistics.median(rates), "epochs": [round(r) for r in rates],
                          "peak_rss_mb": rss, "world": world, "torch_version": torch.__version__}), flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
