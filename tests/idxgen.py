"""Writes MNIST-format idx files for tests: random learnable data, or
deliberately broken files. Test-only (numpy)."""
import gzip
import os
import struct

import numpy as np


def idx_images_bytes(images, magic=0x803):
    n, rows, cols = images.shape
    return struct.pack(">IIII", magic, n, rows, cols) + images.astype(np.uint8).tobytes()


def idx_labels_bytes(labels, magic=0x801):
    return struct.pack(">II", magic, len(labels)) + np.asarray(labels, np.uint8).tobytes()


def write(path, data, gz):
    if gz:
        path += ".gz"
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        with open(path, "wb") as f:
            f.write(data)
    return path


def synth(rng, n, rows=28, cols=28, protos=None, noise=60):
    """Class-dependent blobs plus uniform noise in [-noise, noise]: learnable,
    never all zeros. Pass the same protos for train and test so the test
    split is learnable too."""
    labels = rng.integers(0, 10, size=n)
    if protos is None:
        protos = rng.integers(0, 256, size=(10, rows * cols))
    noise = rng.integers(-noise, noise + 1, size=(n, rows * cols))
    images = np.clip(protos[labels] + noise, 0, 255).astype(np.uint8)
    return images.reshape(n, rows, cols), labels.astype(np.uint8)


def write_shared_set(folder, rng, protos, noise, n_train, n_test):
    """The four files (gz) directly under folder, train and test drawn from
    the same prototypes (10, 784) under noise: validation accuracy then
    measures learning. Returns folder."""
    os.makedirs(folder, exist_ok=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = synth(rng, n, protos=protos, noise=noise)
        write(os.path.join(folder, split + "-images-idx3-ubyte"), idx_images_bytes(images), True)
        write(os.path.join(folder, split + "-labels-idx1-ubyte"), idx_labels_bytes(labels), True)
    return folder


def write_set(folder, rng, n_train=600, n_test=200, gz=True, nested="sub/dir"):
    """The four files under folder/nested; returns their paths."""
    d = os.path.join(folder, nested) if nested else folder
    os.makedirs(d, exist_ok=True)
    paths = {}
    protos = rng.integers(0, 256, size=(10, 28 * 28))
    for split, n in (("train", n_train), ("t10k", n_test)):
        images, labels = synth(rng, n, protos=protos)
        paths[split + "-images"] = write(os.path.join(d, split + "-images-idx3-ubyte"),
                                         idx_images_bytes(images), gz)
        paths[split + "-labels"] = write(os.path.join(d, split + "-labels-idx1-ubyte"),
                                         idx_labels_bytes(labels), gz)
    return paths
