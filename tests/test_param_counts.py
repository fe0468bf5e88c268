"""The builders must reproduce the original code's parameter counts exactly (both towers, fusion and head)."""
import pytest

from s3f_edge import build_model
from s3f_edge.errors import InputError

EXPECTED = {
    # preset: (S3F-Net, spatial baseline, spectral only)
    "brisc2025": (3_443_592, 1_309_284, 2_128_184),
    "chest-xray": (7_638_409, 1_307_745, 6_330_665),
    "busi": (138_700_851, 1_308_771, 137_392_083),
    "ham10000": (7_859_979, 1_311_399, 6_537_863),
}


@pytest.mark.parametrize("preset", EXPECTED)
@pytest.mark.parametrize("position,kind", [(0, "s3f"), (1, "baseline"), (2, "spectral")])
def test_parameter_count_matches_original(preset, position, kind):
    # Building is cheap (weights are allocated, nothing runs), even for the 138M BUSI model.
    assert build_model(preset, kind=kind).count_params() == EXPECTED[preset][position]


def test_brisc_trainable_split_matches_original():
    model = build_model("brisc2025")
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    assert trainable == 3_440_928
    assert model.count_params() - trainable == 2_664


def test_explicit_arguments_override_preset():
    model = build_model("brisc2025", input_shape=(64, 48, 1), num_classes=3, fusion="concat")
    assert model.input_shape == (None, 64, 48, 1)
    assert model.output_shape == (None, 3)
    assert model.get_layer("concat_fusion").output.shape[-1] == 516


def test_chest_preset_has_single_sigmoid_unit():
    model = build_model("chest-xray", input_shape=(64, 64, 1))
    assert model.output_shape == (None, 1)
    assert model.get_layer("probs").activation.__name__ == "sigmoid"


def test_bilinear_fusion_is_2048_wide():
    model = build_model("brisc2025", input_shape=(32, 32, 1))
    assert model.get_layer("bilinear_fusion").output.shape[-1] == 2048


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({}, "needs a preset"),
        ({"input_shape": (64, 64, 1), "num_classes": 1}, "at least 2"),
        ({"input_shape": (8, 64, 1), "num_classes": 2}, "at least 16x16"),
        ({"input_shape": (64, 64, 1), "num_classes": 3, "kind": "resnet"}, "kind must be"),
        ({"input_shape": (64, 64, 1), "num_classes": 3, "variant": "sn3"}, "variant must be"),
        ({"input_shape": (64, 64, 1), "num_classes": 3, "fusion": "gated"}, "fusion must be"),
        ({"input_shape": (64, 64, 1), "num_classes": 3, "sigmoid_head": True}, "binary"),
    ],
)
def test_bad_builder_arguments_are_refused(kwargs, message):
    with pytest.raises(InputError, match=message):
        build_model(**kwargs)


def test_unknown_preset_lists_choices():
    with pytest.raises(InputError, match="brisc2025"):
        build_model("imagenet")
