"""Two-tower retrieval model: train on point-in-time engagements, export, reload.

A user tower and an item tower map raw features to L2-normalised embeddings whose dot product scores a
(user, post) pair; retrieval is a nearest-neighbour search over the item embeddings. This package declares
the entry points the other stages use.
"""

from __future__ import annotations

import os
import sys

if "tensorflow" in sys.modules and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
    raise ImportError(
        "tensorflow was imported before TF_USE_LEGACY_KERAS=1 was set; tensorflow-recommenders needs Keras 2 "
        "(tf-keras). Set TF_USE_LEGACY_KERAS=1 in the environment."
    )
# tensorflow-recommenders is written against Keras 2; TensorFlow picks the Keras flavour at import time.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

from pipelines.training.two_tower.devices import probe_devices
from pipelines.training.two_tower.export import export_two_tower, load_towers
from pipelines.training.two_tower.servers import Towers
from pipelines.training.two_tower.train import TrainResult, train_two_tower

# Before any model touches a device: no cuInit false alarm on machines without an NVIDIA GPU.
probe_devices()

__all__ = ["Towers", "TrainResult", "export_two_tower", "load_towers", "train_two_tower"]
