"""core.classify: which runs an image can go to, reading files safely, predictions and maps."""

from __future__ import annotations

import io
from dataclasses import replace

import pytest
from conftest import TINY
from PIL import Image

from core import classify, preprocess
from core.config import ModelConfig
from core.store import Store


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Store:
    """A store with a tiny cnn_bn and a tiny mlp run on digits."""
    from core.runs import Stored, train_or_load

    s = Store(tmp_path_factory.mktemp("classify-store"))
    for name in ("cnn_bn", "mlp"):
        stored = list(train_or_load(replace(TINY, model=ModelConfig(name)), s))[-1]
        assert isinstance(stored, Stored)
    return s


def meta(run_id: str, dataset: str, accuracy: float, channels: int = 1, created: int = 0):
    return {"run_id": run_id, "config": {"data": {"dataset": dataset}},
            "dataset": {"name": dataset}, "test": {"accuracy": accuracy},
            "input": {"channels": channels}, "created": created}  # fmt: skip


def test_runs_rank_fashion_first_then_by_accuracy_and_skip_non_images():
    metas = [
        meta("digits-best", "digits", 0.99),
        meta("fashion-low", "fashion-mnist", 0.85),
        meta("fashion-high", "fashion-mnist", 0.91),
        meta("fashion-high-newer", "fashion-mnist", 0.91, created=5),
        meta("photos", "my-photos", 0.95, channels=3),
        meta("odd", "fashion-mnist", 0.99, channels=2),
    ]
    order = [m["run_id"] for m in classify.rank(metas)]
    assert order == ["fashion-high-newer", "fashion-high", "fashion-low", "digits-best", "photos"]


def test_a_run_on_somebodys_photos_never_becomes_the_default(tmp_path):
    """Issue 18: real stored runs, one on digits and one on a two-class folder of photos
    that scores higher; the tab opens on the digits run. With only the photo run, nothing
    is the default (the tab trains the default preset instead)."""
    from test_backbone import write_photos

    from core.config import DataConfig
    from core.runs import Stored, train_or_load

    photos = replace(TINY, data=DataConfig(str(write_photos(tmp_path / "bugs", per_class=12)),
                                           val_size=4, image_size=28))  # fmt: skip
    only_photos = Store(tmp_path / "photos-store")
    photo = list(train_or_load(photos, only_photos))[-1]
    assert isinstance(photo, Stored) and photo.meta["dataset"]["name"] == "bugs"
    assert classify.Classifier(only_photos).best() is None

    both = Store(tmp_path / "both-store")
    digits = list(train_or_load(TINY, both))[-1]
    photo = list(train_or_load(photos, both))[-1]
    assert photo.meta["test"]["accuracy"] > digits.meta["test"]["accuracy"]
    assert classify.Classifier(both).best() == digits.run_id


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def digit_picture(store: Store, run_id: str, index: int = 0) -> tuple[Image.Image, int]:
    """A test digit as a 280x280 dark-on-light PNG image (like a drawing), and its label."""
    from core import data as datasets
    from core.config import from_dict

    data = datasets.load(from_dict(store.meta(run_id)["config"]).data)
    big = Image.fromarray(255 - data.x_test[index, 0]).resize((280, 280))
    return Image.open(io.BytesIO(png_bytes(big))), int(data.y_test[index])


def test_predict_frames_the_image_and_sums_to_one(store):
    c = classify.Classifier(store)
    run_id = c.best()
    image, _ = digit_picture(store, run_id)
    pred = c.predict(image, run_id)
    assert pred.x.shape == (1, 1, 28, 28)
    assert pred.probs.shape == (10,) and abs(float(pred.probs.sum()) - 1) < 1e-5
    top = pred.top(3)
    assert [p for _, p in top] == sorted((p for _, p in top), reverse=True)
    assert top[0][0] == pred.classes[int(pred.probs.argmax())]
    # Inverted to light-on-dark and framed: the corners are background (black).
    assert float(pred.x[0, 0, 0, 0]) == 0.0 and float(pred.x.max()) > 0.9


def test_heatmaps_are_hires_cam_for_cnns_and_saliency_for_mlps(store):
    c = classify.Classifier(store)
    by_model = {m["model"]: m["run_id"] for m in c.runs()}
    image, _ = digit_picture(store, by_model["cnn_bn"])
    for model, method in (("cnn_bn", "hires_cam"), ("mlp", "saliency")):
        heat, used = c.heatmap(c.predict(image, by_model[model]))
        assert used == method
        assert heat.shape == (28, 28) and heat.min() >= 0 and heat.max() == pytest.approx(1)


def test_models_are_loaded_once_and_the_cache_is_bounded(store):
    c = classify.Classifier(store, cache_size=1)
    ids = [m["run_id"] for m in c.runs()]
    first = c.model(ids[0])
    assert c.model(ids[0]) is first
    c.model(ids[1])
    assert list(c._models) == [ids[1]]


def test_a_missing_run_is_a_user_error(store):
    with pytest.raises(classify.NoRun, match="not in the store"):
        classify.Classifier(store).model("0" * 20)
    empty = classify.Classifier(Store(store.root / "empty"))
    assert empty.runs() == [] and empty.best() is None


def test_read_refuses_files_outside_the_folder_and_above_the_cap(tmp_path, monkeypatch):
    inside = tmp_path / "uploads"
    inside.mkdir()
    good = inside / "a.png"
    good.write_bytes(png_bytes(Image.new("L", (8, 8), 255)))
    outside = tmp_path / "secret.png"
    outside.write_bytes(good.read_bytes())
    (inside / "link.png").symlink_to(outside)
    c = classify.Classifier(Store(tmp_path / "store"))
    assert c.read(good, inside=inside).size == (8, 8)
    for path in (outside, inside / ".." / "secret.png", inside / "link.png", inside / "none.png"):
        with pytest.raises(preprocess.UnreadableImage):
            c.read(path, inside=inside)
    monkeypatch.setattr(classify, "MAX_FILE_BYTES", 10)
    with pytest.raises(classify.FileTooLarge, match="limit"):
        c.read(good, inside=inside)


def test_an_empty_store_trains_the_default_preset_once(tmp_path, monkeypatch):
    from core import presets

    tiny = presets.Preset("fast", "tiny stand-in", TINY, {})
    monkeypatch.setattr(presets, "get", lambda name: tiny)
    c = classify.Classifier(Store(tmp_path))
    seen: list[tuple[float, str]] = []
    run_id = c.ensure_run(lambda done, what: seen.append((done, what)))
    assert [m["run_id"] for m in c.runs()] == [run_id]
    assert seen and {what for _, what in seen} <= {"waiting", "training"}
    assert all(0 <= d <= 1 for d, _ in seen)
    # Trained as a job of the class's queue, by a worker process (never this server).
    (job,) = c._jobs.jobs(classify.QUEUE_OWNER)
    assert job.state == "done" and job.run_id == run_id and not job.cache_hit
    seen.clear()
    assert c.ensure_run(lambda done, what: seen.append((done, what))) == run_id
    assert seen == []  # the second call trains nothing
    assert len(c._jobs.jobs(classify.QUEUE_OWNER)) == 1
