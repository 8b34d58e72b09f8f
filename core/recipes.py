"""What a pretrained backbone trains best with, readable without importing torch (a cache
hit on the command line must stay instant).

``python -m core train --model NAME`` and the Train page start from a model's recipe; the
caller's own values come after it. Photos in a folder are decoded at the model's photo size
unless an image size is given.
"""

from __future__ import annotations

from dataclasses import replace

DOWNLOADED = ("inception_v3", "resnet50", "vgg16")  # weights from download.pytorch.org

# A fixed feature extractor and a new head: the first step of Keras's transfer-learning
# recipe. On hymenoptera's 196 training photos, also training the top stage (tune="top",
# lr 3e-4) overfitted: 0.93 on val/ against 0.95-0.97 with the backbone frozen.
# Oversampling draws every class as often as the largest: it balances an imbalanced set (as
# seed 004 did) and leaves a balanced one as it is. The 16-pixel shift is for photos only.
PHOTO_RECIPE = {"epochs": 8, "batch_size": 32, "lr": 3e-3, "optimizer": "adamw",
                "schedule": "onecycle", "jitter": 16, "hflip": True,
                "oversample": True}  # fmt: skip
RECIPES = {name: PHOTO_RECIPE for name in ("efficientnet_lite0", *DOWNLOADED)}

# The side photos are decoded at. Lite0 gets 288, more than the 224 it was trained at:
# testing at a larger size than training helps (Touvron et al., 2019, "FixRes"), and the
# insects in hymenoptera's photos are small. A logistic regression on Lite0's features reached
# 0.94 on val/ at 224 and 256, 0.96-0.97 at 288 and 320. The others keep their own sizes.
PHOTO_SIZES = {"efficientnet_lite0": 288, "resnet50": 224, "vgg16": 224, "inception_v3": 299}


def with_recipe(cfg, name: str, dataset: str):
    """``cfg`` (a RunConfig) with model ``name``'s training recipe for ``dataset``, if it has
    one (a built-in dataset's 28-pixel images get no 16-pixel shift)."""
    from core.data import BUILTIN

    recipe = dict(RECIPES.get(name, {}))
    if dataset in BUILTIN:
        recipe.pop("jitter", None)
    return replace(cfg, train=replace(cfg.train, **recipe))


def sized_for(cfg):
    """``cfg`` with a folder dataset decoded at the model's photo size, unless an image size
    was given; built-in datasets keep theirs (a backbone enlarges Fashion-MNIST itself)."""
    from core.data import BUILTIN

    size = PHOTO_SIZES.get(cfg.model.name)
    if size is None or cfg.data.image_size is not None or cfg.data.dataset in BUILTIN:
        return cfg
    return replace(cfg, data=replace(cfg.data, image_size=size))
