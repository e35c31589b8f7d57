#!/usr/bin/env python3
"""Writes a tiny synthetic dataset in MNIST's IDX format, for tests that must not need the network.

  python3 scripts/make_tiny_mnist.py OUT_DIR [--train N] [--test N] [--seed S]

creates OUT_DIR/mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte (plain IDX, big-endian headers:
magic 0x00000803 / 0x00000801, counts, 28 x 28). Class k is a bright 6x6 square near its own place
(two rows of five places, jittered by up to 5 pixels) on a noisy background, so a small CNN learns it
in a few dozen steps while neighbouring classes overlap enough that it takes some training.
Standard library only (no numpy)."""
import argparse
import os
import random
import struct


def images_and_labels(n, rng):
    pixels = bytearray()
    labels = bytearray()
    for _ in range(n):
        k = rng.randrange(10)
        y0 = 2 + (k // 5) * 12 + rng.randrange(6)
        x0 = (k % 5) * 5 + rng.randrange(6)
        for y in range(28):
            for x in range(28):
                on = y0 <= y < y0 + 6 and x0 <= x < x0 + 6
                pixels.append(80 + rng.randrange(176) if on else rng.randrange(140))
        labels.append(k)
    return bytes(pixels), bytes(labels)


def write(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out_dir")
    ap.add_argument("--train", type=int, default=512)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--seed", type=int, default=1)
    a = ap.parse_args()
    if a.train < 1 or a.test < 1:
        ap.error("--train and --test must be >= 1")
    rng = random.Random(a.seed)
    d = os.path.join(a.out_dir, "mnist")
    os.makedirs(d, exist_ok=True)
    for split, n in (("train", a.train), ("t10k", a.test)):
        pixels, labels = images_and_labels(n, rng)
        write(os.path.join(d, split + "-images-idx3-ubyte"), struct.pack(">IIII", 0x803, n, 28, 28) + pixels)
        write(os.path.join(d, split + "-labels-idx1-ubyte"), struct.pack(">II", 0x801, n) + labels)
    print(f"make_tiny_mnist: {a.train} training and {a.test} test images in {d}")


if __name__ == "__main__":
    main()
