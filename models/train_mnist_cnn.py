"""Train the MNIST CNN and write ``models/weights/mnist_cnn.pt``: ``python -m models.train_mnist_cnn``.

Deterministic (fixed seeds, 2 threads, deterministic algorithms); about 15 s on 2 cores. Prints the
held-out accuracy on the 1,000 test digits of :func:`models.mnist_cnn.load_split`.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from .mnist_cnn import WEIGHTS_PATH, MnistCNN, load_split

SEED = 0
EPOCHS = 8
BATCH_SIZE = 64
LEARNING_RATE = 2e-3


def train(x: np.ndarray, y: np.ndarray, epochs: int = EPOCHS, seed: int = SEED) -> MnistCNN:
    """Train a fresh :class:`MnistCNN` with Adam on ``(x, y)`` and return it in eval mode."""
    torch.manual_seed(seed)
    model = MnistCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    inputs, labels = torch.from_numpy(x), torch.from_numpy(y)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for batch in torch.randperm(len(inputs), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
        scheduler.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    """Fraction of ``x`` whose top-1 prediction equals ``y``."""
    with torch.no_grad():
        predicted = model(torch.from_numpy(x)).argmax(dim=1).numpy()
    return float((predicted == y).mean())


def main() -> None:
    """Train on the 4,000 training digits, report held-out accuracy, save the state_dict."""
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    start = time.perf_counter()
    x_train, y_train, x_test, y_test = load_split()
    model = train(x_train, y_train)
    WEIGHTS_PATH.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WEIGHTS_PATH)
    print(f"train accuracy {accuracy(model, x_train, y_train):.4f}, "
          f"held-out accuracy {accuracy(model, x_test, y_test):.4f} on {len(y_test)} digits, "
          f"{time.perf_counter() - start:.1f} s; wrote {WEIGHTS_PATH}")


if __name__ == "__main__":
    main()
