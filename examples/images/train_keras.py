"""The digits CNN in Keras, trained by several workers with ``tf.distribute.MultiWorkerMirroredStrategy``,
reading through ``tusk.tf``.

``tusk launch --tf-config`` gives each worker its ``TF_CONFIG`` (the cluster's workers and its own
index) with the torchrun variables; each worker reads its own share of every epoch
(``tusk.tf.dataset`` shards by ``RANK``/``WORLD_SIZE``), handed to the strategy per replica with
``distribute_datasets_from_function`` in a custom training loop (Keras 3's ``fit`` does not take a
distributed dataset), and the strategy all-reduces the gradients, so the workers' weights stay
equal.

    tusk launch -n 2 --tf-config -- python examples/images/train_keras.py \\
        --train hdfs://nn:9000/digits/train --test hdfs://nn:9000/digits/test --epochs 3
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import tensorflow as tf

import tusk
import tusk.tf


def to_example(b):
    """{image [B,3,28,28], path} → (image [B,28,28,3], the digit from …/<digit>/<n>.png)."""
    digit = tf.strings.regex_replace(b["path"], r"^.*/([0-9]+)/[^/]*$", r"\1")
    return tf.transpose(b["image"], [0, 2, 3, 1]), tf.strings.to_number(digit, tf.int64)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32, help="per worker")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--weights-out", help="a directory: each worker saves its final weights there (worker-K.npz)")
    args = p.parse_args()

    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    rank, world = tusk.world()
    # Every worker takes the same number of steps: the smallest share.
    steps = min(
        len(tusk.Dataset(args.train, args.batch_size, drop_last=True, rank=r, world_size=world))
        for r in range(world)
    )

    def train_input(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        ds = tusk.tf.dataset(
            args.train, args.batch_size, columns=["image", "path"], shuffle=True, seed=args.seed,
            drop_last=True, rank=ctx.input_pipeline_id, world_size=ctx.num_input_pipelines,
        )
        return ds.map(to_example).repeat()

    tf.keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model = tf.keras.Sequential(
            [
                tf.keras.Input((28, 28, 3)),
                tf.keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
                tf.keras.layers.MaxPooling2D(),
                tf.keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                tf.keras.layers.MaxPooling2D(),
                tf.keras.layers.Flatten(),
                tf.keras.layers.Dense(64, activation="relu"),
                tf.keras.layers.Dense(10),
            ]
        )
        optimizer = tf.keras.optimizers.SGD(args.lr, momentum=0.9)
    xent = tf.keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, reduction=tf.keras.losses.Reduction.NONE
    )
    global_batch = args.batch_size * strategy.num_replicas_in_sync
    it = iter(strategy.distribute_datasets_from_function(train_input))

    @tf.function
    def train_step(it):
        def replica_step(x, y):
            with tf.GradientTape() as tape:
                per_example = xent(y, model(x, training=True))
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=global_batch)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            return loss

        losses = strategy.run(replica_step, args=next(it))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, losses, axis=None)

    for epoch in range(args.epochs):
        total = 0.0
        for _ in range(steps):
            total += float(train_step(it))
        if rank == 0:
            print(f"epoch {epoch}: loss {total / steps:.4f} ({steps} steps of {global_batch})", flush=True)

    # Test accuracy over the whole test set (every worker evaluates all of it: it is small).
    correct = total = 0
    for b in tusk.Dataset(args.test, 256, columns=["image", "path"], shuffle=False, rank=0, world_size=1):
        x = np.transpose(b["image"], (0, 2, 3, 1))
        y = np.array([int(p.decode().rsplit("/", 2)[-2]) for p in b["path"]])
        correct += int((model.predict(x, verbose=0).argmax(1) == y).sum())
        total += len(y)
    if args.weights_out:
        os.makedirs(args.weights_out, exist_ok=True)
        np.savez(os.path.join(args.weights_out, f"worker-{rank}.npz"), *model.get_weights())
    print(f"worker {rank}: test accuracy {correct / total:.4f}", flush=True)


if __name__ == "__main__":
    main()
