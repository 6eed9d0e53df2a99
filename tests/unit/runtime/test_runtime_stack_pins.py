"""Family pins in a stack profile ("4.48.*"): the installed-stack check and the compile/serve drift check."""

from __future__ import annotations

import pytest

from neuron_runtime.nxdi_server import version_drift
from neuron_runtime.stacks import NEURON_2_23_VLLM_0_7_2, pin_matches, stack_problems

GOOD = {"neuronx-distributed-inference": "0.3.5591", "neuronx-cc": "2.18.121.0+9e31e41a", "vllm": "0.7.2+neuron218",
        "torch-neuronx": "2.6.0.2.7.5413", "neuronx-distributed": "0.12.12111", "transformers": "4.48.3"}  # fmt: skip


@pytest.mark.parametrize(
    "version, pin, ok",
    [("4.48.3", "4.48.*", True), ("4.48.0", "4.48.*", True), ("4.48.3+local", "4.48.*", True),
     ("4.49.0", "4.48.*", False), ("4.4.8", "4.48.*", False), ("14.48.0", "4.48.*", False),
     ("0.3.5591", "0.3.5591", True), ("0.3.5591+abc", "0.3.5591", True), ("0.3.55910", "0.3.5591", False)],
)  # fmt: skip
def test_pin_matches(version, pin, ok):
    assert pin_matches(version, pin) is ok


def test_the_2_23_stack_pins_transformers_like_nxdi():
    # NX3 v0.3.5591 setup.py install_requires: "transformers==4.48.*"
    assert NEURON_2_23_VLLM_0_7_2.pinned_distributions["transformers"] == "4.48.*"


def test_stack_check_enforces_the_transformers_family():
    profile = NEURON_2_23_VLLM_0_7_2
    assert stack_problems(profile, GOOD, profile.id) == []
    assert stack_problems(profile, dict(GOOD, transformers="4.48.0"), profile.id) == []
    assert stack_problems(profile, dict(GOOD, transformers="4.51.3"), profile.id) == [
        "transformers 4.51.3 is installed, stack neuron-2.23-vllm-0.7.2 needs 4.48.*"
    ]
    assert stack_problems(profile, dict(GOOD, transformers=None), profile.id) == [
        "transformers is not installed (need 4.48.*)"
    ]


def test_drift_within_a_family_pin_is_none():
    profile = NEURON_2_23_VLLM_0_7_2
    recorded = dict(GOOD)
    assert version_drift(profile, recorded, dict(GOOD, transformers="4.48.2")) == []
    assert version_drift(profile, recorded, dict(GOOD, transformers="4.50.0")) == [
        "transformers compiled with 4.48.3, installed 4.50.0"
    ]
    assert version_drift(profile, recorded, dict(GOOD, transformers=None)) == [
        "transformers compiled with 4.48.3, installed None"
    ]
    # exact pins stay exact, down to the local part
    assert version_drift(profile, recorded, dict(GOOD, **{"neuronx-cc": "2.18.121.0+ffff"})) == [
        "neuronx-cc compiled with 2.18.121.0+9e31e41a, installed 2.18.121.0+ffff"
    ]
