"""A CNN on the digits, trained data-parallel with PyTorch DDP, reading through ``tusk.torch``.

An ordinary DDP script: ``torch.distributed.init_process_group()`` reads the torchrun variables,
so it runs the same under ``tusk launch -n 2 -- python train_cnn.py …``, ``torchrun`` or a
scheduler. gloo on CPU; NCCL with one GPU per worker when CUDA devices are there
(``tusk launch --gpus-per-worker 1`` gives each worker its own).

Data: the TFRecord datasets ``tusk images normalize`` wrote from ``prepare_digits.py``'s PNG tree,
read by each rank through ``tusk.torch.Dataset`` (its share of every epoch, shuffled); the label
is the image's directory name (ImageFolder's convention), taken from the ``path`` column.

Checkpoints: after every epoch rank 0 writes ``CKPT/epoch-NNNN.pt`` atomically (any tusk URL,
HDFS included). A restarted job (``tusk launch --max-restarts``) resumes from the newest one.

    tusk launch -n 2 -- python examples/images/train_cnn.py \\
        --train hdfs://nn:9000/digits/train --test hdfs://nn:9000/digits/test \\
        --checkpoints hdfs://nn:9000/digits/ckpt --epochs 4

``--input png --train DIR --test DIR`` reads the PNG files themselves instead, decoded with PIL
in a map-style Dataset under DistributedSampler, the usual way (for the benchmark).
"""

from __future__ import annotations

import argparse
import io
import os
import time

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F

import tusk
import tusk.torch


class Net(nn.Module):
    def __init__(self, channels: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def labels_of(paths) -> torch.Tensor:
    """The digit is the image's directory: …/train/7/00012.png → 7."""
    return torch.tensor([int(p.decode().rsplit("/", 2)[-2]) for p in paths], dtype=torch.int64)


class PngFolder(torch.utils.data.Dataset):
    """The usual way: a list of PNG files, each decoded and normalised when asked for."""

    def __init__(self, root: str) -> None:
        self.files = sorted(
            os.path.join(d, f) for d, _, fs in os.walk(root) for f in fs if f.endswith(".png")
        )

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.files[i]) as im:
            x = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
        return torch.from_numpy(x.transpose(2, 0, 1).copy()), int(self.files[i].rsplit("/", 2)[-2])


def batches(args, url: str, train: bool, epoch: int, rank: int, world: int):
    """(images [B,3,28,28], labels [B]) for this rank."""
    if args.input == "png":
        ds = PngFolder(url)
        sampler = torch.utils.data.distributed.DistributedSampler(
            ds, num_replicas=world, rank=rank, shuffle=train, seed=args.seed, drop_last=train
        )
        sampler.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            ds, batch_size=args.batch_size, sampler=sampler, num_workers=args.loader_workers,
            drop_last=train,
        )
        yield from loader
        return
    ds = tusk.torch.Dataset(
        url, args.batch_size, columns=["image", "path"], shuffle=train, seed=args.seed,
        drop_last=train,
    )
    ds.set_epoch(epoch)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=args.loader_workers)
    for b in loader:
        yield b["image"], labels_of(b["path"])


def steps_per_epoch(args, world: int, rank: int, device) -> int:
    """Every rank takes the same number of steps (DDP all-reduces in each): the smallest share."""
    if args.input == "png":
        n = len(PngFolder(args.train)) // world // args.batch_size
    else:
        n = len(tusk.Dataset(args.train, args.batch_size, drop_last=True, rank=rank, world_size=world))
    t = torch.tensor([n], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return int(t.item())


def evaluate(args, model, device, rank: int, world: int) -> float:
    model.eval()
    counts = torch.zeros(2, dtype=torch.float64, device=device)
    with torch.no_grad():
        for x, y in batches(args, args.test, False, 0, rank, world):
            pred = model(x.to(device)).argmax(1).cpu()
            counts[0] += (pred == y).sum().item()
            counts[1] += len(y)
    dist.all_reduce(counts)
    model.train()
    return float(counts[0] / counts[1])


def newest_checkpoint(url: str):
    names = [n for n in tusk.list_dir(url) if n.startswith("epoch-") and n.endswith(".pt")]
    return f"{url.rstrip('/')}/{max(names)}" if names else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--checkpoints", help="a tusk URL for epoch checkpoints (resumed from)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=32, help="per rank")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--input", choices=["tusk", "png"], default="tusk")
    p.add_argument("--loader-workers", type=int, default=0)
    p.add_argument("--params-out", help="a directory: each rank saves its final parameters there (rank-K.npz)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = p.parse_args()

    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if use_cuda:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    dist.init_process_group("nccl" if use_cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    restart = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))
    torch.manual_seed(args.seed)
    net = Net().to(device)
    opt = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=0.9)
    start = 0
    if args.checkpoints:
        ckpt = newest_checkpoint(args.checkpoints)
        if ckpt:
            state = torch.load(io.BytesIO(tusk.read_bytes(ckpt)), map_location=device)
            net.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            start = state["epoch"] + 1
            print(f"resumed from {ckpt} (epoch {state['epoch']} done; restart {restart})", flush=True)
    model = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if use_cuda else None)
    steps = steps_per_epoch(args, world, rank, device)
    if rank == 0:
        print(
            f"{world} rank(s) on {'cuda (nccl)' if use_cuda else 'cpu (gloo)'}, {steps} steps of "
            f"{args.batch_size} per rank per epoch, epochs {start}..{args.epochs - 1}",
            flush=True,
        )
    acc = float("nan")
    for epoch in range(start, args.epochs):
        t0, seen, total = time.perf_counter(), 0, 0.0
        for i, (x, y) in enumerate(batches(args, args.train, True, epoch, rank, world)):
            if i == steps:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            seen += len(y)
            total += loss.item()
        dt = time.perf_counter() - t0
        acc = evaluate(args, model, device, rank, world)
        if rank == 0:
            if args.checkpoints:
                buf = io.BytesIO()
                torch.save({"epoch": epoch, "model": net.state_dict(), "optimizer": opt.state_dict()}, buf)
                tusk.write_bytes(f"{args.checkpoints.rstrip('/')}/epoch-{epoch:04d}.pt", buf.getvalue())
            print(
                f"epoch {epoch}: loss {total / max(steps, 1):.4f}, test accuracy {acc:.4f}, "
                f"{seen * world / dt:.0f} samples/s",
                flush=True,
            )
        dist.barrier()
    if args.params_out:
        os.makedirs(args.params_out, exist_ok=True)
        np.savez(
            os.path.join(args.params_out, f"rank-{rank}.npz"),
            **{k: v.detach().cpu().numpy() for k, v in net.state_dict().items()},
        )
    if rank == 0:
        print(f"test accuracy {acc:.4f}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
