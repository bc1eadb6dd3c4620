"""Bounded fuzzing: mutated image bytes, malformed YAML configs and model cards give a result or our own error."""

from __future__ import annotations

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzzing import CARDS, CONFIGS, card_bytes, card_target, config_target, decode_target, mutated_images

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(mutated_images())
def test_image_loader_never_crashes(data):
    decode_target(data)


@FAST
@given(st.binary(max_size=200))
def test_image_loader_on_random_bytes(data):
    decode_target(data)


@FAST
@given(CONFIGS)
def test_config_loader_on_structured_yaml(values):
    config_target(yaml.safe_dump(values, allow_unicode=True))


@FAST
@given(st.text(max_size=200))
def test_config_loader_on_arbitrary_text(text):
    config_target(text)


@FAST
@given(CARDS)
def test_model_card_loader_on_malformed_json(card):
    card_target(card_bytes(card))


@FAST
@given(st.binary(max_size=200))
def test_model_card_loader_on_random_bytes(raw):
    card_target(raw)
