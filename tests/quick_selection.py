"""Selection settings (as ``NIGHTFEED_*`` variables) that keep a whole training run on a tiny world to a
minute or two: one candidate per retriever, two epochs, nights two days apart."""

from __future__ import annotations

QUICK_SELECTION = {
    "NIGHTFEED_TWO_TOWER__EPOCHS": "2",
    "NIGHTFEED_SELECTION__WINDOW_DAYS": "2",
    "NIGHTFEED_SELECTION__MIN_TRAIN_EXAMPLES": "10",
    "NIGHTFEED_SELECTION__TWO_TOWER_SEARCH": "{}",
    "NIGHTFEED_SELECTION__MMR_LAMBDAS": "[0.8]",
    "NIGHTFEED_SELECTION__RETRIEVAL_DEPTHS": "[500]",
    "NIGHTFEED_SELECTION__POPULARITY_WINDOWS": "[7]",
    "NIGHTFEED_SELECTION__KNN_NEIGHBORS": "[20]",
    "NIGHTFEED_SELECTION__ALS_FACTORS": "[16]",
    "NIGHTFEED_SELECTION__ALS_REGULARIZATIONS": "[0.05]",
    "NIGHTFEED_SELECTION__POPULARITY_PRIORS": "[0.0, 1.0]",
    "NIGHTFEED_SELECTION__BLEND_WEIGHTS": "[0.5]",
}
