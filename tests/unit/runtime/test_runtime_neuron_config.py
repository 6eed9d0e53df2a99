"""Golden tests: NeuronConfig kwargs must equal what F23 vLLM builds for the same engine settings.

Expected dicts are written out key by key from F23 neuronx_distributed.py (_get_default_neuron_config,
_get_default_speculation_config) plus our artifact settings, so a drift in either side fails here.
"""

from __future__ import annotations

import json

import pytest

from neuron_runtime.compile_spec import LoraAdapter, SpeculativeConfig
from neuron_runtime.errors import SpecError
from neuron_runtime.neuron_config import (
    build_neuron_config_kwargs,
    draft_neuron_config_updates,
    resolve_torch_dtype,
    serve_override_neuron_config,
)
from neuron_runtime.topology import NodeRole

CACHE = "/cache"

SINGLE_NODE_GOLDEN = {
    # F23 _get_default_neuron_config
    "tp_degree": 32,
    "ctx_batch_size": 1,
    "batch_size": 8,
    "max_context_length": 4096,
    "seq_len": 4096,
    "enable_bucketing": True,
    "is_continuous_batching": True,
    "quantized": False,
    "torch_dtype": "bfloat16",
    "padding_side": "right",
    "on_device_sampling_config": {"dynamic": True, "deterministic": False},
    "sequence_parallel_enabled": True,
    "lora_config": None,
    # ours
    "save_sharded_checkpoint": True,
    "logical_nc_config": 1,
}


def build(spec, profile, **kw):
    return build_neuron_config_kwargs(spec, profile, model_cache=CACHE, **kw)


def test_single_node_matches_vllm_defaults(make_spec, profile):
    assert build(make_spec(), profile) == SINGLE_NODE_GOLDEN


def test_batch_of_one_is_not_continuous_batching(make_spec, profile):
    kwargs = build(make_spec(max_num_seqs=1, lnc=2, dtype="half"), profile)
    assert kwargs["is_continuous_batching"] is False
    assert kwargs["batch_size"] == 1
    assert kwargs["logical_nc_config"] == 2
    assert kwargs["torch_dtype"] == "float16"


def test_kwargs_are_plain_json(make_spec, profile):
    spec = make_spec(lora_adapters=[{"name": "a", "uri": "pvc://adapters/a"}])
    kwargs = build(spec, profile)
    assert json.loads(json.dumps(kwargs)) == kwargs


def test_lora_config_built_like_f23_runner(make_spec, profile):
    spec = make_spec(
        lora_adapters=[
            {"name": "sql", "uri": "hf://org/sql-lora"},
            {"name": "chat", "uri": "pvc://adapters/chat"},
        ],
        max_lora_rank=32,
        override_neuron_config={"target_modules": ["q_proj", "v_proj"], "sequence_parallel_enabled": False},
    )
    expected = dict(SINGLE_NODE_GOLDEN)
    expected["sequence_parallel_enabled"] = False  # the override wins, as in F23's update()
    expected["lora_config"] = {
        "max_loras": 2,
        "max_lora_rank": 32,
        "target_modules": ["q_proj", "v_proj"],  # popped from the override into LoraServingConfig
        "lora_ckpt_paths": {  # sorted by name: adapter slot order must equal serve's --lora-modules order
            "chat": "/var/lib/neuron-operator/models/adapters/chat",
            "sql": "/cache/hf/org/sql-lora/main",
        },
    }
    kwargs = build(spec, profile)
    assert kwargs == expected
    assert list(kwargs["lora_config"]["lora_ckpt_paths"]) == ["chat", "sql"]
    assert "target_modules" not in kwargs


def test_lora_rank_defaults_to_vllm_default(make_spec, profile):
    spec = make_spec(lora_adapters=[{"name": "a", "uri": "pvc://x/a"}])
    assert build(spec, profile)["lora_config"]["max_lora_rank"] == 16
    assert build(spec, profile)["lora_config"]["target_modules"] is None


def test_target_modules_stay_in_overrides_without_lora(make_spec, profile):
    # F23 pops target_modules only when LoRA is enabled; otherwise it reaches NeuronConfig as given.
    kwargs = build(make_spec(override_neuron_config={"target_modules": ["q_proj"]}), profile)
    assert kwargs["target_modules"] == ["q_proj"]
    assert kwargs["lora_config"] is None


DRAFT_GOLDEN = {
    # F23 _get_default_speculation_config
    "tp_degree": 32,
    "batch_size": 4,
    "max_context_length": 2048,
    "seq_len": 2048,
    "speculation_length": 5,
    "trace_tokengen_model": False,
    "enable_fused_speculation": True,
    "enable_bucketing": True,
    "quantized": False,
    "torch_dtype": "bfloat16",
    "on_device_sampling_config": {"top_k": 1, "do_sample": False},
    # ours
    "save_sharded_checkpoint": True,
    "logical_nc_config": 1,
}


def test_draft_speculation_matches_vllm_defaults(make_spec, profile):
    spec = make_spec(
        max_num_seqs=4,
        max_model_len=2048,
        speculative={"model_uri": "hf://meta-llama/Llama-3.2-1B-Instruct", "num_speculative_tokens": 5},
    )
    assert build(spec, profile) == DRAFT_GOLDEN


def test_eagle_speculation_adds_eagle_flag(make_spec, profile):
    spec = make_spec(
        max_num_seqs=4,
        max_model_len=2048,
        speculative={"model_uri": "pvc://drafts/eagle", "num_speculative_tokens": 5, "method": "eagle"},
    )
    assert build(spec, profile) == {**DRAFT_GOLDEN, "enable_eagle_speculation": True}


def test_draft_config_updates_follow_f23(make_spec, profile):
    # F23 NeuronSpeculationCausalLM.load_weights, plain draft model
    assert draft_neuron_config_updates(DRAFT_GOLDEN) == {
        "speculation_length": 0,
        "trace_tokengen_model": True,
        "enable_fused_speculation": False,
    }
    # EAGLE keeps speculation_length and disables sequence parallelism on the draft
    eagle = {**DRAFT_GOLDEN, "enable_eagle_speculation": True, "draft_model_modules_to_not_convert": ["lm_head"]}
    assert draft_neuron_config_updates(eagle) == {
        "trace_tokengen_model": True,
        "enable_fused_speculation": False,
        "modules_to_not_convert": ["lm_head"],
        "is_eagle_draft": True,
        "sequence_parallel_enabled": False,
    }


def test_overrides_are_applied_last(make_spec, profile):
    spec = make_spec(
        override_neuron_config={
            "context_encoding_buckets": [1024, 4096],
            "fused_qkv": True,
            "save_sharded_checkpoint": False,  # the user may opt out of self-contained artifacts
            "on_device_sampling_config": {"dynamic": True, "deterministic": True, "global_topk": 64},
            "tp_degree": 32,  # repeating a spec-derived value is fine
        }
    )
    expected = {
        **SINGLE_NODE_GOLDEN,
        "context_encoding_buckets": [1024, 4096],
        "fused_qkv": True,
        "save_sharded_checkpoint": False,
        "on_device_sampling_config": {"dynamic": True, "deterministic": True, "global_topk": 64},
    }
    assert build(spec, profile) == expected


def test_load_only_overrides_stay_out_of_compile(make_spec, profile):
    kwargs = build(make_spec(override_neuron_config={"skip_warmup": True, "start_rank_id": 0}), profile)
    assert "skip_warmup" not in kwargs
    assert "start_rank_id" not in kwargs


@pytest.mark.parametrize(
    "override, field",
    [
        ({"tp_degree": 16}, "tp_degree"),
        ({"batch_size": 2}, "batch_size"),
        ({"seq_len": 8192}, "seq_len"),
        ({"torch_dtype": "float16"}, "torch_dtype"),
        ({"logical_nc_config": 2}, "logical_nc_config"),
        ({"speculation_length": 4}, "speculation_length"),  # no speculative spec: the spec must own it
        ({"world_size": 64}, "world_size"),
    ],
)
def test_overrides_cannot_contradict_the_spec(make_spec, profile, override, field):
    with pytest.raises(SpecError, match=field):
        build(make_spec(override_neuron_config=override), profile)


def test_override_cannot_turn_eagle_off(make_spec, profile):
    spec = make_spec(
        speculative={"model_uri": "pvc://d/e", "num_speculative_tokens": 3, "method": "eagle"},
        override_neuron_config={"enable_eagle_speculation": False},
    )
    with pytest.raises(SpecError, match="enable_eagle_speculation"):
        build(spec, profile)


def test_multi_node_uses_nxdi_rank_semantics(make_spec, profile):
    kwargs = build(make_spec(tp_degree=64, world_size=2), profile)
    assert kwargs["tp_degree"] == 64
    assert kwargs["world_size"] == 64  # ranks across all nodes
    assert kwargs["local_ranks_size"] == 32  # ranks of one node
    assert kwargs["start_rank_id"] == 0  # node 0 at compile; other nodes set theirs at load
    assert "world_size" not in build(make_spec(), profile)  # single node: exactly vLLM's dict


@pytest.mark.parametrize(
    "requested, model_config, expected",
    [
        ("bfloat16", None, "bfloat16"),
        ("half", None, "float16"),
        ("float", None, "float32"),
        ("auto", {"torch_dtype": "bfloat16"}, "bfloat16"),
        ("auto", {"torch_dtype": "float32"}, "float16"),  # vLLM downcasts fp32 checkpoints to fp16
        ("auto", {"torch_dtype": "float32", "model_type": "gemma2"}, "bfloat16"),
        ("auto", {}, "float16"),  # no torch_dtype in config.json counts as float32
        ("auto", {"text_config": {"torch_dtype": "bfloat16"}, "torch_dtype": "float32"}, "bfloat16"),
        ("auto", None, None),  # unresolved until the model's config is read
    ],
)
def test_dtype_resolution_follows_vllm(profile, requested, model_config, expected):
    assert resolve_torch_dtype(requested, profile, model_config) == expected


def test_auto_dtype_uses_model_config(make_spec, profile):
    kwargs = build(make_spec(dtype="auto"), profile, model_config={"torch_dtype": "bfloat16"})
    assert kwargs["torch_dtype"] == "bfloat16"


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(dtype="int8"), "unsupported dtype"),
        (dict(lnc=3), "lnc"),
        (dict(tp_degree=30, world_size=4), "not divisible"),
        (dict(max_num_seqs=0), "max_num_seqs"),
        (dict(max_lora_rank=48, lora_adapters=[{"name": "a", "uri": "pvc://x/a"}]), "max_lora_rank"),
        (
            dict(
                lora_adapters=[{"name": "a", "uri": "pvc://x/a"}],
                speculative={"model_uri": "pvc://d/d", "num_speculative_tokens": 4},
            ),
            "cannot be combined",
        ),
        (dict(lora_adapters=[{"name": "a", "uri": "pvc://x/a"}, {"name": "a", "uri": "pvc://x/b"}]), "unique"),
        (dict(override_neuron_config={"lora_modules": []}), "lora_modules"),
        (dict(speculative={"model_uri": "pvc://d/d", "num_speculative_tokens": 4, "method": "medusa"}), "method"),
    ],
)
def test_invalid_specs_are_rejected(make_spec, profile, changes, message):
    spec = make_spec(**changes)
    with pytest.raises(SpecError, match=message):
        build(spec, profile)


def test_serve_override_has_load_time_keys_only(make_spec):
    spec = make_spec(override_neuron_config={"skip_warmup": True, "fused_qkv": True, "start_rank_id": 8})
    assert serve_override_neuron_config(spec) == {"skip_warmup": True}


def test_serve_override_repeats_speculation_flags(make_spec):
    spec = make_spec(speculative={"model_uri": "pvc://d/e", "num_speculative_tokens": 3, "method": "eagle"})
    assert serve_override_neuron_config(spec) == {"enable_fused_speculation": True, "enable_eagle_speculation": True}


def test_serve_override_multi_node_seam(make_spec):
    spec = make_spec(tp_degree=64, world_size=2)
    assert serve_override_neuron_config(spec, NodeRole(rank=1, world_size=2)) == {
        "local_ranks_size": 32,
        "start_rank_id": 32,
    }


def test_spec_objects_roundtrip(make_spec):
    spec = make_spec(lora_adapters=[{"name": "a", "uri": "pvc://x/a"}])
    assert spec.lora_adapters == (LoraAdapter("a", "pvc://x/a"),)
    spec = make_spec(speculative={"model_uri": "pvc://d", "num_speculative_tokens": 2})
    assert spec.speculative == SpeculativeConfig("pvc://d", 2)
