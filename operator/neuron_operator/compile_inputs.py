"""Map a NeuronInferenceService spec to its compile inputs, and nothing else.

The resulting :class:`~neuron_runtime.compile_spec.CompileSpec` is what the compile Job receives and what the
compile key hashes. Only fields that change the compiled graph go in: replicas, resources, labels, runtime
overrides and the artifact store never do, so changing them never recompiles. extraArgs are not compile inputs on
the 2.23 stack (NxDI compiles from the NeuronConfig alone); on vllm-neuron stacks the compile runs the serving
command line, so the flags among them that reach the engine are (:func:`extra_args_split`).
"""

from __future__ import annotations

from neuron_runtime import vllm_neuron
from neuron_runtime.compile_spec import CompileSpec, LoraAdapter, SpeculativeConfig
from neuron_runtime.stacks import PROFILES, PluginStackProfile

from neuron_operator.api.spec import NeuronInferenceServiceSpec
from neuron_operator.catalog import Catalog


def extra_args_split(spec: NeuronInferenceServiceSpec, stack: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(engine args that are compile inputs, server-only args) of spec.engine.extraArgs on ``stack``."""
    profile = PROFILES.get(stack)
    args = tuple(str(a) for a in spec.engine.extra_args)
    if isinstance(profile, PluginStackProfile):
        return vllm_neuron.split_extra_args(profile, args)
    return (), args


def compile_spec_for(spec: NeuronInferenceServiceSpec, catalog: Catalog, stack: str) -> CompileSpec:
    """The compile inputs of ``spec`` on ``catalog``'s instance type, for runtime stack profile ``stack``."""
    instance = catalog.instance_at(spec.instance_type, spec.logical_neuron_core_config)
    adapters = tuple(LoraAdapter(name=a.name, uri=a.uri) for a in sorted(spec.lora_adapters, key=lambda a: a.name))
    return CompileSpec(
        model_uri=spec.model.uri,
        model_revision=spec.model.revision,
        instance_family=instance.family,
        lnc=instance.lnc,
        tp_degree=spec.tensor_parallel_size,
        world_size=spec.nodes_per_replica,
        max_num_seqs=spec.engine.max_num_seqs,
        max_model_len=spec.engine.max_model_len,
        dtype=spec.engine.dtype,
        stack=stack,
        override_neuron_config=dict(spec.engine.override_neuron_config),
        lora_adapters=adapters,
        # Without adapters vLLM runs without LoRA, so the rank changes nothing and must not change the key.
        max_lora_rank=spec.engine.max_lora_rank if adapters else None,
        speculative=_speculative_config(spec),
        data_parallel_size=spec.data_parallel_size,
        max_num_batched_tokens=spec.engine.max_num_batched_tokens,
        engine_args=extra_args_split(spec, stack)[0],
    )


def _speculative_config(spec: NeuronInferenceServiceSpec) -> SpeculativeConfig | None:
    speculative = spec.speculative_decoding
    if speculative is None:
        return None
    return SpeculativeConfig(
        model_uri=_pinned_uri(speculative.draft_model.uri, speculative.draft_model.revision),
        num_speculative_tokens=speculative.num_speculative_tokens,
        max_model_len=speculative.max_model_len,
        method=speculative.method,
    )


def _pinned_uri(uri: str, revision: str) -> str:
    """The draft's revision travels in its URI (the runtime's hf://org/name@revision form), and so into the key."""
    if uri.startswith("hf://") and "@" not in uri:
        return f"{uri}@{revision}"
    return uri
