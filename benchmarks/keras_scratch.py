"""Keras baseline for benchmarks/scratch_epoch.py: smallvision's small_cnn built in Keras, fed by ImageDataGenerator.

Run with a Python that has TensorFlow and tf-keras (Keras 2, which still has ImageDataGenerator), e.g.
    python3 -m venv /tmp/kenv && /tmp/kenv/bin/pip install tensorflow-cpu tf-keras pillow scipy
    /tmp/kenv/bin/python benchmarks/keras_scratch.py ../shared/data/hymenoptera --epochs 4 [--augment]
The network is small_cnn + Head(hidden=512): Conv 32-64-128-128 (3x3, same padding, ReLU) each with 2x2 max
pooling, flatten, dropout, dense 512, dropout, dense out; inputs rescaled to [0, 1] at 150 px, batch 32, Adam 1e-3.
`--augment` adds Chollet's ImageDataGenerator augmentation. Prints one JSON line per epoch with its seconds.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    """Train for a few epochs and print each epoch's wall seconds (training and validation)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("data")
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--augment", action="store_true")
    args = ap.parse_args()
    import tf_keras as keras
    from tf_keras.preprocessing.image import ImageDataGenerator

    extra = (
        {
            "rotation_range": 40,
            "width_shift_range": 0.2,
            "height_shift_range": 0.2,
            "shear_range": 0.2,
            "zoom_range": 0.2,
            "horizontal_flip": True,
        }
        if args.augment
        else {}
    )
    train = ImageDataGenerator(rescale=1 / 255, **extra).flow_from_directory(
        f"{args.data}/train", target_size=(150, 150), batch_size=32, class_mode="sparse"
    )
    val = ImageDataGenerator(rescale=1 / 255).flow_from_directory(
        f"{args.data}/val", target_size=(150, 150), batch_size=32, class_mode="sparse"
    )
    layers = [keras.Input((150, 150, 3))]
    for width in (32, 64, 128, 128):
        layers += [keras.layers.Conv2D(width, 3, padding="same", activation="relu"), keras.layers.MaxPooling2D(2)]
    layers += [
        keras.layers.Flatten(),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(512, activation="relu"),
        keras.layers.Dropout(0.5),
        keras.layers.Dense(train.num_classes),
    ]
    model = keras.Sequential(layers)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            row = {"epoch": epoch + 1, "seconds": time.perf_counter() - self.start}
            row["val_accuracy"] = float(logs.get("val_accuracy", float("nan")))
            print(json.dumps(row), flush=True)

    model.fit(train, validation_data=val, epochs=args.epochs, callbacks=[Timer()], verbose=0)


if __name__ == "__main__":
    main()
