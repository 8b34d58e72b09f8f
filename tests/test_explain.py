"""core.explain (filters, feature maps, Grad-CAM, saliency, user images) and the Inside page."""

from __future__ import annotations

import io
import json
import re
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from core import explain, models
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.models.base import Classifier, InputSpec, one_view

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "views" / "inside.py")


def build(name: str) -> Classifier:
    torch.manual_seed(0)
    return models.build(ModelConfig(name), InputSpec()).eval()


def image(seed: int = 0) -> torch.Tensor:
    return torch.rand(1, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def normalised(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    return (x - model.mean) / model.std


def png(im: Image.Image, **params) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **params)
    return buf.getvalue()


# -- layers, filters and feature maps ------------------------------------------------------


def test_conv_layers_in_order():
    assert [name for name, _ in explain.conv_layers(build("cnn_bn"))] == ["body.0", "body.4"]
    assert [name for name, _ in explain.conv_layers(build("fast"))] == ["body.0", "body.3"]
    assert explain.conv_layers(build("mlp")) == []
    convs = explain.conv_layers(build("cnn_bn"))
    assert [(c.in_channels, c.out_channels) for _, c in convs] == [(1, 12), (12, 24)]


def test_first_layer_filters_are_the_weights():
    model = build("cnn_bn")
    filters = explain.first_layer_filters(model)
    assert filters.shape == (12, 1, 3, 3) and filters.dtype == np.float32
    np.testing.assert_array_equal(filters, model.body[0].weight.detach().numpy())
    with pytest.raises(ValueError):
        explain.first_layer_filters(build("mlp"))


@pytest.mark.parametrize(
    ("name", "shapes", "ends"),
    [
        # cnn_bn: conv -> BN -> pool -> ReLU, so the maps are the pooled ReLU outputs.
        ("cnn_bn", [(12, 14, 14), (24, 6, 6)], [4, 8]),
        # fast: conv (stride 2) -> BN -> ReLU.
        ("fast", [(32, 14, 14), (64, 7, 7)], [3, 6]),
    ],
)
def test_feature_maps_are_each_conv_blocks_relu_output(name, shapes, ends):
    model = build(name)
    x = image()
    maps = explain.feature_maps(model, x)
    assert [m.shape for _, m in maps] == shapes
    assert [n for n, _ in maps] == [n for n, _ in explain.conv_layers(model)]
    with torch.no_grad():
        for (_, m), end in zip(maps, ends, strict=True):
            expected = model.body[:end](normalised(model, x))[0].numpy()
            np.testing.assert_allclose(m, expected, rtol=1e-5, atol=1e-6)
            assert (m >= 0).all()  # after the ReLU


def test_feature_maps_of_an_mlp_are_empty():
    assert explain.feature_maps(build("mlp"), image()) == []


def test_a_conv_without_relu_gives_its_own_output():
    body = nn.Sequential(nn.Conv2d(1, 3, 3), nn.Flatten(), nn.Linear(3 * 26 * 26, 8), nn.ReLU())
    model = Classifier(InputSpec(), body, nn.Linear(8, 10)).eval()
    x = image()
    ((_, m),) = explain.feature_maps(model, x)
    with torch.no_grad():
        np.testing.assert_allclose(m, body[0](normalised(model, x))[0].numpy(), atol=1e-6)
    assert (m < 0).any()  # not rectified: the dense layer's ReLU is not this conv's


def test_explaining_leaves_no_trace_on_the_model():
    model = build("cnn_bn").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    explain.feature_maps(model, image())
    explain.hires_cam(model, image())
    explain.saliency(model, image())
    explain.probabilities(model, image())
    assert model.training  # mode restored
    assert all(not m._forward_hooks for m in model.modules())
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():  # BatchNorm statistics untouched (eval mode)
        assert torch.equal(v, before[k]), k


def test_uint8_and_float_inputs_agree():
    model = build("fast")
    u8 = (torch.rand(1, 1, 28, 28) * 255).round().to(torch.uint8)
    a = explain.probabilities(model, u8.numpy())
    b = explain.probabilities(model, u8.float() / 255)
    np.testing.assert_allclose(a, b, rtol=1e-6)
    assert a.shape == (10,) and abs(a.sum() - 1) < 1e-5
    with pytest.raises(ValueError):
        explain.probabilities(model, torch.rand(2, 1, 28, 28))


# -- HiResCAM and saliency -----------------------------------------------------------------


def hires_cam_oracle(model: Classifier, x: torch.Tensor, split: int, target: int) -> np.ndarray:
    """HiResCAM from an empty picture, written out by hand: body[:split] ends at the last
    conv block's ReLU; the score's gradient there times the activation's change from an
    all-black image's, summed over channels."""
    empty = model.body[:split](normalised(model, torch.zeros_like(x))).detach()
    act = model.body[:split](normalised(model, x)).detach().requires_grad_(True)
    score = model.head(model.body[split:](act))[0, target]
    (grad,) = torch.autograd.grad(score, act)
    cam = F.relu((grad * (act - empty)).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=(28, 28), mode="bilinear", align_corners=False)[0, 0]
    return (cam / cam.max()).detach().numpy() if cam.max() > 0 else np.zeros((28, 28))


@pytest.mark.parametrize(("name", "split"), [("cnn_bn", 8), ("fast", 6)])
def test_hires_cam_matches_a_hand_written_one(name, split):
    model = build(name)
    for seed in range(3):
        x = image(seed)
        for target in (0, 7):
            cam = explain.hires_cam(model, x, target)
            assert cam.shape == (28, 28) and cam.dtype == np.float32
            assert np.isfinite(cam).all() and cam.min() >= 0 and cam.max() <= 1
            np.testing.assert_allclose(cam, hires_cam_oracle(model, x, split, target), atol=1e-5)
    mlp = build("mlp")  # no conv layer: pixel saliency
    np.testing.assert_array_equal(explain.hires_cam(mlp, image()), explain.saliency(mlp, image()))


def test_a_view_averaging_model_is_explained_on_the_image_through_all_its_views():
    """resnet_mini answers for ten views of the image (moved a pixel, mirrored): its
    feature maps are the image's own view, and its HiResCAM moves each view's evidence back
    onto the image, so the map of a mirrored picture is the mirrored map (the image's own
    view alone is not mirror-symmetric)."""
    model = build("resnet_mini")
    x = image(1)
    maps = explain.feature_maps(model, x)
    with torch.no_grad():
        first = model.body[:3](normalised(model, x))[0].numpy()  # strided conv, BN, ReLU
    np.testing.assert_allclose(maps[0][1], first, rtol=1e-5, atol=1e-6)
    for target in (0, 6):
        cam = explain.hires_cam(model, x, target)
        np.testing.assert_allclose(explain.hires_cam(model, x.flip(-1), target), cam[:, ::-1],
                                   atol=1e-5)  # fmt: skip
    with one_view(model):  # the map with the other views' evidence left out
        own = explain.hires_cam(model, x, 0)
        assert np.abs(explain.hires_cam(model, x.flip(-1), 0) - own[:, ::-1]).max() > 0.05


def test_hires_cam_defaults_to_the_predicted_class_and_checks_the_class():
    model = build("cnn_bn")
    x = image()
    predicted = int(explain.probabilities(model, x).argmax())
    np.testing.assert_array_equal(
        explain.hires_cam(model, x), explain.hires_cam(model, x, predicted)
    )
    with pytest.raises(ValueError):
        explain.hires_cam(model, x, 10)


def test_hires_cam_works_under_inference_mode():
    model = build("cnn_bn")
    with torch.inference_mode():
        x = image()  # an inference tensor
        cam = explain.hires_cam(model, x)
    assert cam.shape == (28, 28) and np.isfinite(cam).all() and cam.max() == 1


class LeftHalf(nn.Module):
    """Zeroes the right half of the image: nothing there can change the output."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x)
        mask[..., : x.shape[-1] // 2] = 1
        return x * mask


def test_saliency_is_zero_where_the_model_cannot_look():
    torch.manual_seed(0)
    body = nn.Sequential(LeftHalf(), nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten())
    model = Classifier(InputSpec(), body, nn.Linear(4 * 28 * 28, 10)).eval()
    for seed in range(3):
        sal = explain.saliency(model, image(seed))
        assert sal.shape == (28, 28) and sal.dtype == np.float32
        assert (sal[:, 14:] == 0).all()
        assert sal[:, :14].max() == 1.0 and (sal[:, :14] > 0).mean() > 0.5


def test_saliency_takes_the_largest_channel():
    """A model reading only the green channel of an RGB image: saliency is that channel's
    |gradient|, scaled to a maximum of 1."""
    spec = InputSpec(channels=3, mean=(0.0,) * 3, std=(1.0,) * 3)
    weights = torch.zeros(1, 3, 4, 4)
    weights[0, 1] = torch.arange(16.0).view(4, 4)
    body = nn.Sequential(nn.Flatten())
    head = nn.Linear(48, 1, bias=False)
    head.weight.data = weights.view(1, 48)
    model = Classifier(spec, body, head)
    sal = explain.saliency(model, torch.rand(1, 3, 4, 4), 0)
    np.testing.assert_allclose(sal, np.arange(16.0).reshape(4, 4) / 15, rtol=1e-6)


# -- pictures ------------------------------------------------------------------------------


def test_tile_lays_out_maps_with_gaps_each_scaled_on_its_own():
    maps = np.stack([np.full((2, 3), 5.0), np.arange(6.0).reshape(2, 3), -np.eye(2, 3)])
    grid = explain.tile(maps, columns=2)
    assert grid.dtype == np.uint8 and grid.shape == (2 * 3 - 1, 2 * 4 - 1)
    assert (grid[:, 3] == 255).all() and (grid[2] == 255).all()  # 1-pixel gaps
    assert (grid[:2, :3] == 0).all()  # a constant map is black
    np.testing.assert_array_equal(grid[:2, 4:7], [[0, 51, 102], [153, 204, 255]])
    np.testing.assert_array_equal(grid[3:5, :3], [[0, 255, 255], [255, 0, 255]])
    assert (grid[3:5, 4:] == 255).all()  # the unused cell is background
    assert explain.tile(maps, columns=8).shape == (2, 3 * 4 - 1)  # never wider than needed
    big = explain.tile(maps, columns=2, gap=2, scale=3)  # cells enlarged, gaps kept thin
    assert big.shape == (2 * 6 + 2, 2 * 9 + 2) and (big[:, 9:11] == 255).all()
    np.testing.assert_array_equal(big[0:6:3, 11:20:3], grid[:2, 4:7])  # the second map


def test_tile_accepts_filter_stacks_grey_and_colour():
    grey = explain.tile(np.random.rand(12, 1, 3, 3), columns=16)
    assert grey.shape == (3, 12 * 4 - 1)
    colour = explain.tile(np.random.rand(5, 3, 3, 3), columns=4, gap=2)
    assert colour.shape == (2 * 5 - 2, 4 * 5 - 2, 3)
    framed = explain.tile(np.random.rand(12, 1, 3, 3), columns=6, gap_value=(1, 2, 3))
    assert framed.shape == (7, 23, 3) and (framed[3] == (1, 2, 3)).all()
    assert (framed[..., 0] == framed[..., 2])[:3, :3].all()  # the maps themselves stay grey
    with pytest.raises(ValueError):
        explain.tile(np.random.rand(4, 2, 3, 3))
    with pytest.raises(ValueError):
        explain.tile(np.zeros((0, 3, 3)))


def test_enlarge_overlay_and_display():
    picture = np.array([[0, 255], [128, 64]], dtype=np.uint8)
    big = explain.enlarge(picture, 3)
    assert big.shape == (6, 6)
    np.testing.assert_array_equal(big[::3, ::3], picture)
    assert (big[:3, :3] == 0).all() and (big[:3, 3:] == 255).all()  # crisp blocks
    blend = explain.overlay(picture, np.array([[0.0, 1.0], [0.5, np.nan]]))
    assert blend.shape == (2, 2, 3) and blend.dtype == np.uint8
    assert blend[0, 1, 0] > blend[0, 1, 2]  # hot: red
    assert blend[0, 0, 2] > blend[0, 0, 0]  # cold: blue
    x = torch.rand(1, 3, 5, 5)
    shown = explain.to_display(x)
    assert shown.shape == (5, 5, 3) and shown.dtype == np.uint8
    assert explain.to_display(x[:, :1]).shape == (5, 5)


# -- user images ---------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(
    "make",
    [
        lambda: Image.new("L", (40, 30), 255),
        lambda: Image.new("RGB", (10, 50), (255, 255, 255)),
        lambda: Image.new("RGBA", (30, 30), (255, 255, 255, 255)),
        lambda: Image.new("LA", (30, 30), (255, 255)),
        lambda: Image.new("1", (30, 30), 1),
        lambda: Image.new("CMYK", (30, 30), (0, 0, 0, 0)),
        lambda: Image.new("I;16", (30, 30), 65535),
        lambda: _palette(255),
        lambda: Image.new("L", (1, 1), 255),
        lambda: Image.new("L", (1, 300), 255),
    ],
    ids=["L", "RGB", "RGBA", "LA", "1", "CMYK", "I;16", "P", "1x1", "1x300"],
)
def test_to_model_input_white_images_of_any_mode(make, channels):
    x = explain.to_model_input(make(), channels, 28)
    assert x.shape == (1, channels, 28, 28) and x.dtype == torch.float32
    torch.testing.assert_close(x, torch.ones_like(x), atol=1 / 255, rtol=0)


def _palette(value: int) -> Image.Image:
    im = Image.new("P", (30, 30), 1)
    im.putpalette([0, 0, 0, value, value, value])
    return im


def test_to_model_input_grey_values_and_sizes():
    red = explain.to_model_input(Image.new("RGB", (9, 9), (255, 0, 0)), 1, 16)
    assert red.shape == (1, 1, 16, 16)
    assert abs(float(red.mean()) - 76 / 255) < 1 / 255  # ITU-R 601 luma, as Pillow's "L"
    rgb = explain.to_model_input(Image.new("RGB", (9, 9), (255, 0, 0)), 3, 16)
    torch.testing.assert_close(rgb[0, :, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    with pytest.raises(ValueError):
        explain.to_model_input(Image.new("L", (9, 9)), 2, 16)


def test_transparency_becomes_the_black_background():
    clear = Image.new("RGBA", (20, 20), (255, 255, 255, 0))
    assert float(explain.to_model_input(clear, 1, 28).max()) == 0.0
    half = Image.new("LA", (20, 20), (255, 128))
    assert abs(float(explain.to_model_input(half, 1, 28).mean()) - 128 / 255) < 2 / 255
    p = _palette(255)
    p.info["transparency"] = 1  # palette index 1 (white) is transparent
    assert float(explain.to_model_input(Image.open(io.BytesIO(png(p))), 1, 28).max()) == 0.0


def test_sixteen_bit_grey_is_scaled_not_clipped():
    a = np.full((10, 10), 32768, dtype=np.uint16)
    im = Image.open(io.BytesIO(png(Image.fromarray(a))))
    x = explain.to_model_input(im, 1, 28)
    assert abs(float(x.mean()) - 0.5) < 1 / 255


def test_exif_orientation_is_applied():
    im = Image.new("L", (40, 20), 0)
    im.paste(255, (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display": the left half becomes the top
    x = explain.to_model_input(explain.open_image(png(im, exif=exif)), 1, 28)[0, 0]
    assert float(x[:12].mean()) > 0.95 and float(x[16:].mean()) < 0.05


def png_header(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (its data is one empty row)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * (width + 1)))
        + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(("side", "pixels"), [(7000, 49_000_000), (20000, 400_000_000)])
def test_huge_images_are_refused_from_their_header(side, pixels):
    data = png_header(side, side)
    assert len(data) < 100_000
    with pytest.raises(explain.ImageTooLarge) as caught:
        explain.open_image(data)
    assert caught.value.pixels == pixels
    assert "megapixels" in str(caught.value)


def test_the_pixel_cap_applies_to_any_pil_image(monkeypatch):
    from core import preprocess

    monkeypatch.setattr(preprocess, "MAX_PIXELS", 100)  # where the guards live
    with pytest.raises(explain.ImageTooLarge):
        explain.to_model_input(Image.new("L", (11, 10)), 1, 28)
    with pytest.raises(explain.ImageTooLarge):
        explain.open_image(png(Image.new("L", (11, 10))))
    assert explain.to_model_input(Image.new("L", (10, 10)), 1, 28).shape == (1, 1, 28, 28)


def test_unreadable_files_say_so():
    noise = np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)
    good = png(Image.fromarray(noise))
    tiff = io.BytesIO()  # a real image, in a format outside the allow-list
    Image.new("L", (8, 8)).save(tiff, "TIFF")
    for data in (b"", b"random bytes" * 50, b"%PDF-1.4\n" + b"0" * 200, tiff.getvalue()):
        with pytest.raises(explain.UnreadableImage):
            explain.open_image(data)
    truncated = explain.open_image(good[: len(good) // 2])  # the header is intact
    with pytest.raises(explain.UnreadableImage, match="not a readable image"):
        explain.to_model_input(truncated, 1, 28)


def test_jpeg_is_accepted():
    buf = io.BytesIO()
    Image.new("RGB", (300, 200), (255, 255, 255)).save(buf, "JPEG")
    x = explain.to_model_input(explain.open_image(buf.getvalue()), 3, 28)
    assert x.shape == (1, 3, 28, 28) and float(x.min()) > 0.95


# -- the page ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_store(tmp_path_factory) -> dict:
    """A store with a tiny cnn_bn run and a tiny mlp run on digits: {model name: run id}."""
    from core.runs import Stored, train_or_load
    from core.store import Store

    root = tmp_path_factory.mktemp("inside-store")
    ids = {"root": root}
    for name in ("cnn_bn", "mlp"):
        cfg = RunConfig(
            DataConfig(dataset="digits", val_size=100, train_limit=256),
            ModelConfig(name),
            TrainConfig(epochs=1, batch_size=64, schedule="constant", bf16="off"),
        )
        stored = list(train_or_load(cfg, Store(root)))[-1]
        assert isinstance(stored, Stored)
        ids[name] = stored.run_id
    return ids


def app(monkeypatch, root: Path, lang: str = "en", run: str | None = None):
    """The page in AppTest; ``run``: the run picked (as if on another page: ui.runs keeps
    the pick in the session). Picking it with the selectbox's set_value fails outside
    English: AppTest formats the value again outside the session, in English."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CNN_CLASSROOM_STORE", str(root))
    st.cache_data.clear()  # the store, its run list and loaded models are cached per process
    st.cache_resource.clear()
    at = AppTest.from_file(PAGE, default_timeout=120)
    at.session_state["lang"] = lang
    if run is not None:
        at.session_state["run"] = run
    return at.run()


def texts(elements) -> list[str]:
    return [e.value for e in elements]


def test_page_with_an_empty_store_tells_how_to_train(monkeypatch, tmp_path):
    at = app(monkeypatch, tmp_path)
    assert not at.exception
    assert any("python -m core train" in v for v in texts(at.info))
    assert not at.selectbox and not at.image


def test_page_shows_filters_prediction_grad_cam_and_maps(monkeypatch, page_store):
    at = app(monkeypatch, page_store["root"])
    at.selectbox(key="ins_run").set_value(page_store["cnn_bn"]).run()
    assert not at.exception
    # filters, the input, the Grad-CAM overlay, one grid per conv layer
    assert len(at.image) == 5
    assert [e.label for e in at.expander] == [
        "Convolution layer 1 of 2 · 3×3 filters · 12 maps of 14×14",
        "Convolution layer 2 of 2 · 3×3 filters · 24 maps of 6×6",
    ]
    table = at.dataframe[0].value
    assert len(table) == 3 and (np.diff(table["Probability"].to_numpy()) <= 0).all()
    assert any(c.startswith("True class: ") for img in at.image for c in img.captions)
    # Another class and another image.
    at.selectbox(key="ins_class").set_value(4).run()
    at.number_input[0].set_value(3).run()
    assert not at.exception
    assert any("True class: 3" in c for img in at.image for c in img.captions)


def test_page_with_an_mlp_explains_there_are_no_filters(monkeypatch, page_store):
    at = app(monkeypatch, page_store["root"])
    at.selectbox(key="ins_run").set_value(page_store["mlp"]).run()
    assert not at.exception
    assert any("no convolution layers" in v for v in texts(at.info))
    assert len(at.image) == 2 and not at.expander  # the input and its saliency


def test_page_upload_good_and_bad_files(monkeypatch, page_store):
    at = app(monkeypatch, page_store["root"])
    at.selectbox(key="ins_run").set_value(page_store["cnn_bn"]).run()
    at.radio(key="ins_source").set_value("upload").run()
    assert any("Upload an image" in v for v in texts(at.info))
    photo = Image.new("RGB", (120, 90), (30, 30, 30))
    photo.paste((240, 240, 240), (40, 20, 80, 70))
    at.file_uploader(key="ins_upload").upload("photo.png", png(photo), "image/png").run()
    assert not at.exception and not at.error
    assert len(at.image) == 5
    at.file_uploader(key="ins_upload").set_value(("fake.png", b"%PDF-1.4 " * 20, "image/png"))
    at.run()
    assert not at.exception
    assert texts(at.error) == ["Not a readable image: upload a PNG, JPEG, GIF, WEBP or BMP file."]
    at.file_uploader(key="ins_upload").set_value(("huge.png", png_header(9000, 9000), "image/png"))
    at.run()
    assert not at.exception
    assert texts(at.error) == [
        "This image has 81 megapixels; the limit is 16. Use a smaller image."
    ]


def test_page_in_spanish(monkeypatch, page_store):
    at = app(monkeypatch, page_store["root"], lang="es", run=page_store["cnn_bn"])
    assert not at.exception
    assert at.selectbox(key="ins_run").value == page_store["cnn_bn"]
    assert at.title[0].value == "Dentro de la red"
    assert at.selectbox(key="ins_run").label == "Ejecución entrenada"
    assert at.expander[0].label == "Capa de convolución 1 de 2 · filtros de 3×3 · 12 mapas de 14×14"
    assert at.dataframe[0].value.columns.tolist()[:2] == ["Clase", "Probabilidad"]


def test_every_label_has_english_and_spanish():
    table = json.loads((ROOT / "assets" / "i18n" / "inside.json").read_text())
    assert all(key.startswith("ins_") for key in table)
    for key, value in table.items():
        assert set(value) == {"en", "es"} and all(v.strip() for v in value.values()), key
        assert sorted(re.findall(r"{\w+}", value["en"])) == sorted(
            re.findall(r"{\w+}", value["es"])
        ), key
    used = set(re.findall(r'"(ins_[a-z_]+)"', Path(PAGE).read_text()))
    assert used <= set(table), used - set(table)
