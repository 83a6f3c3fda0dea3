"""Every activation rnnstream knows equals Keras' own, for Keras 3 and (where it exists) tf.keras 2."""

from __future__ import annotations

import numpy as np
import pytest

from rnnstream.errors import UnsupportedLayerError
from rnnstream.layers import activations

keras = pytest.importorskip("keras")
tf_keras = pytest.importorskip("tf_keras")
tf = pytest.importorskip("tensorflow")


def sample() -> np.ndarray:
    rng = np.random.default_rng(3)
    x = np.concatenate([np.linspace(-8, 8, 34), rng.normal(0, 3, 30)]).astype(np.float32)
    return x.reshape(4, 16)


OPTION_FORMS = {"gelu_approximate": lambda x: keras.activations.gelu(x, approximate=True)}
"""rnnstream's names for Keras activations computed with an option (not Keras names themselves)."""


@pytest.mark.parametrize("name", activations.NAMES)
def test_keras3_activation(name: str) -> None:
    x = sample()
    activation = OPTION_FORMS[name] if name in OPTION_FORMS else keras.activations.get(name)
    expected = np.asarray(activation(x))
    np.testing.assert_allclose(activations.get(name, keras_major=3)(x), expected, rtol=1e-5, atol=1e-6)


KERAS2_NAMES = sorted(
    n for n in activations.NAMES if n in dir(tf_keras.activations) and n not in ("serialize", "deserialize")
)


@pytest.mark.parametrize("name", KERAS2_NAMES)
def test_keras2_activation(name: str) -> None:
    x = sample()
    expected = np.asarray(tf_keras.activations.get(name)(tf.constant(x)))
    np.testing.assert_allclose(activations.get(name, keras_major=2)(x), expected, rtol=1e-5, atol=1e-6)


def test_hard_sigmoid_differs_by_version() -> None:
    x = np.float32([1.0])
    assert activations.get("hard_sigmoid", 2)(x)[0] == pytest.approx(0.7)
    assert activations.get("hard_sigmoid", 3)(x)[0] == pytest.approx(1 / 6 + 0.5)


def test_sigmoid_does_not_overflow() -> None:
    with np.errstate(over="raise"):
        y = activations.sigmoid(np.float32([-1000.0, 1000.0]))
    assert y.tolist() == [0.0, 1.0]


def test_unknown_activation_is_refused() -> None:
    with pytest.raises(UnsupportedLayerError, match="unknown activation 'my_act'"):
        activations.get("my_act")
