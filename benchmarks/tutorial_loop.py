"""The PyTorch transfer-learning tutorial's fine-tuning loop, as a baseline for benchmarks/time_to_accuracy.py.

Run: .venv/bin/python benchmarks/tutorial_loop.py DATA_DIR [--epochs 10] [--backbone efficientnet_lite0]
As in https://pytorch.org/tutorials/beginner/transfer_learning_tutorial.html: ImageFolder, RandomResizedCrop(224) +
horizontal flip, batch 4, SGD lr 0.001 momentum 0.9, StepLR(7, 0.1), the whole network trained, decoding every image
every epoch. The network is smallvision's default backbone with the same bundled ImageNet weights (the tutorial's
ResNet-18 weights cannot be downloaded here), normalized as those weights expect. Prints one JSON line per epoch
with the Unix time the epoch's validation ended.
"""

from __future__ import annotations

import argparse
import json
import time

import torch
from torch import nn
from torchvision import datasets, transforms

from smallvision.models.weights import load_pretrained, normalization_for, resolve_weights


def main() -> None:
    """Train and print per-epoch validation accuracy with timestamps."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    torch.manual_seed(0)
    spec = resolve_weights(args.backbone)
    model = load_pretrained(spec)
    mean, std = normalization_for(spec, model)
    model.reset_classifier(0)
    norm = transforms.Normalize(mean, std)
    tf = {
        "train": transforms.Compose(
            [transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]
        ),
        "val": transforms.Compose(
            [transforms.Resize(args.size * 256 // 224), transforms.CenterCrop(args.size), transforms.ToTensor(), norm]
        ),
    }
    image_sets = {s: datasets.ImageFolder(f"{args.data}/{s}", tf[s]) for s in ("train", "val")}
    loaders = {
        s: torch.utils.data.DataLoader(image_sets[s], batch_size=4, shuffle=s == "train", num_workers=args.workers)
        for s in ("train", "val")
    }
    num_classes = len(image_sets["train"].classes)
    model = nn.Sequential(model, nn.Linear(model.num_features, num_classes))
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    for epoch in range(1, args.epochs + 1):
        model.train()
        for x, y in loaders["train"]:
            optimizer.zero_grad()
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for x, y in loaders["val"]:
                correct += int((model(x).argmax(1) == y).sum())
        acc = correct / len(image_sets["val"])
        print(json.dumps({"epoch": epoch, "val_accuracy": acc, "time": time.time()}), flush=True)


if __name__ == "__main__":
    main()
