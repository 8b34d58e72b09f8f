"""The config schema (core/schema.py): one description of every field, from which the command
line's flags, the sweep's fields, validation and the Train page's widgets come."""

from __future__ import annotations

import dataclasses

import pytest

from core import UserError, cli, schema, sweep
from core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from core.models import catalog


def test_every_config_field_is_described_once():
    schema._check_complete()  # raises naming the fields the schema and the dataclasses differ on
    names = [f.name for f in schema.FIELDS_LIST]
    assert len(names) == len(set(names))


def test_every_field_has_a_label_and_help_in_both_languages():
    for f in schema.FIELDS_LIST:
        for lang in ("en", "es"):
            assert f.label(lang).strip() and f.help(lang).strip(), (f.name, lang)
        assert f.label("en") != f.help("en")
        for choice in f.choices:
            assert f.choice_label(choice, "es"), (f.name, choice)


def test_the_command_line_has_one_flag_per_field_with_its_help():
    parser = cli.parser()
    train = parser._subparsers._group_actions[0].choices["train"]  # argparse's own records
    flags = {opt: action for action in train._actions for opt in action.option_strings}
    for f in schema.FIELDS_LIST:
        if f.flag:
            action = flags["--" + f.name.replace("_", "-")]
            assert f.help("en")[:30].replace("%", "%%") in action.help


def test_one_notation_for_layer_sizes_everywhere():
    """The command line, a sweep and the page read "3x75" alike (seed 002's notation)."""
    args = cli.parser().parse_args(["train", "--model", "cnn_stages", "--stages", "2x16,32",
                                    "--hidden", "3x75"])  # fmt: skip
    assert args.hidden == (75, 75, 75) and args.stages == (16, 16, 32)
    assert sweep.parse_value("hidden", "3x75") == (75, 75, 75)
    assert sweep.parse_value("stages", "2x16,32") == (16, 16, 32)
    assert schema.field("hidden").parse("2x64, 10") == (64, 64, 10)
    assert schema.field("hidden").parse("") is None  # empty: the model's own default
    for bad in ("abc", "3x", "x", "1.5", "0x5", "9x10"):
        with pytest.raises(UserError):
            schema.field("hidden").parse(bad)


def test_values_read_back_as_they_are_shown():
    for name, value in (("hidden", (50, 50)), ("no_relu", ()), ("lr", 0.001), ("hflip", True),
                        ("image_size", None), ("optimizer", "sgd")):  # fmt: skip
        f = schema.field(name)
        assert f.parse(schema.show(value)) == value


@pytest.mark.parametrize(
    ("section", "change", "message"),
    [
        ("train", {"epochs": 0}, "epochs must be between 1 and 500"),
        ("train", {"lr": 0.0}, r"learning rate must be in \(0, 10000\]"),
        ("train", {"label_smoothing": 1.0}, r"label smoothing must be in \[0, 1\)"),
        ("train", {"gamma": 0.0}, r"gamma must be in \(0, 1\]"),
        ("train", {"optimizer": "rmsprop"}, "unknown optimizer 'rmsprop'; choose from"),
        ("train", {"lr": float("nan")}, "learning rate must be in"),
        ("model", {"hidden": (0,)}, "a hidden layer's size must be between 1 and 4096 units"),
        ("model", {"hidden": ()}, "give 1 to 8 hidden layers"),
        ("model", {"kernel": 4}, "kernel must be an odd number"),
        ("data", {"image_size": 4}, "image size must be between 8 and 512 pixels"),
    ],
)
def test_validation_comes_from_the_fields_bounds(section, change, message):
    sections = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}
    part = dataclasses.replace(sections[section](), **change)
    with pytest.raises(UserError, match=message):
        schema.validate(dataclasses.replace(RunConfig(), **{section: part}))


def test_each_model_option_names_the_families_that_read_it():
    for f in schema.FIELDS_LIST:
        if f.section == "model" and f.name != "name":
            assert f.families, f.name  # an option no family reads would be a dead knob
            for name in f.families:
                assert f.name in catalog.family(name).options
    assert [f.name for f in schema.model_fields("fast")] == ["hidden", "dropout", "width"]
    assert schema.field("tune").families == ("efficientnet_lite0", "inception_v3", "resnet50",
                                             "vgg16")  # fmt: skip


def test_an_unknown_field_is_one_line_listing_the_known_ones():
    with pytest.raises(UserError, match="no config field 'colour'; fields: model, batch_size"):
        schema.field("colour")
    with pytest.raises(UserError, match=r"no config field 'data\.lr'"):
        schema.field("data.lr")


def test_an_option_the_model_does_not_read_is_refused_or_dropped(tmp_path):
    """The command line and a sweep refuse it in one line; a page's leftover from the model
    picked before is dropped when the run is planned, so it cannot change the run's key."""
    from core import runs
    from core.store import Store

    with pytest.raises(UserError, match="--width: mlp has no such option"):
        cli.build_config(cli.parser().parse_args(["train", "--model", "mlp", "--width", "8"]))
    with pytest.raises(UserError, match="width: mlp has no such option"):
        sweep.grid(RunConfig(model=ModelConfig("mlp")), sweep.parse_grid(["width=8|16"]))
    leftover = RunConfig(DataConfig(dataset="digits"), ModelConfig("mlp", stages=(8, 16)))
    clean = RunConfig(DataConfig(dataset="digits"), ModelConfig("mlp"))
    store = Store(tmp_path)
    assert runs.plan(leftover, store) == runs.plan(clean, store)
