"""Hypothesis strategies for NeuronInferenceService specs: within the API models and beyond them.

Three families, mixed:
- ``schema_specs``: values drawn from the pydantic model's own JSON schema (``NeuronInferenceServiceSpec``, the one
  the CRD is generated from): every property, enum, bound, pattern and array limit; optional fields come and go.
  Most pass the schema and meet the cross-field rules (CEL at admission, or the operator's validation) by chance.
- ``valid_specs``: combinations that are valid by construction (catalog instance types with a tensor-parallel
  degree they support), so some services really compile and serve.
- ``hostile_specs``: a valid spec with one or more mutations at a random path: a wrong type, a huge or negative
  number, an unknown key, a hostile string (very long, unicode, control characters, shell/template/flag
  injection), an empty object, a removed field; or a spec that is not an object at all.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from neuron_operator.api.spec import NeuronInferenceServiceSpec

# (instance type, tensorParallelSize) pairs valid on one node; the simulated cluster has nodes of every one.
VALID_SHAPES = (("inf2.xlarge", 2), ("inf2.48xlarge", 8), ("inf2.48xlarge", 24), ("trn1.32xlarge", 8),
                ("trn1.32xlarge", 16), ("trn1.32xlarge", 32), ("trn2.48xlarge", 16))
MODELS = ("hf://meta-llama/Llama-3.2-1B-Instruct", "hf://meta-llama/Llama-3.1-8B-Instruct",
          "s3://models/llama/", "pvc://models/llama-3")

HOSTILE_STRINGS = (
    "", " ", "\t", "\n", "a\nb", "\x00", "nul\x00inside", "\x07\x08\x1b[31mred\x1b[0m", "\r\n\r\n",
    "\u202eevil\u202c", "\u200b", "e\u0301\u0301\u0301", "模型", "🦙🦙🦙", "\ud7ff\ue000\uffff",
    "$(rm -rf /)", "`id`", "; shutdown -h now", "'; DROP TABLE services; --", "{{ .Values.secret }}",
    "${HOME}", "%s%s%s%n", "../../../../etc/passwd", "/abs/path", "C:\\Windows", "--model=evil",
    "--port 1", "-tp 64", "hf://", "s3://", "pvc://", "hf:// spaces in uri", "null", "true", "0", "-1",
    "1e309", "NaN", "<script>alert(1)</script>", "a" * 64, "A" * 254, "x" * 1025, "y" * 4097,
)
LONG_STRINGS = (10_000, 70_000, 300_000)  # beyond CRD maxLength, beyond the 256 KiB annotation budget
HUGE_NUMBERS = (2**31, 2**31 - 1, -(2**31), 2**53 + 1, 2**63 - 1, -(2**63), 10**20, -(10**20), 1e300, -1e300,
                0.5, -0.0, 1.0000001)
WRONG_TYPES = ("a string", 7, -1, 3.25, True, False, None, [], {}, [1, "two", None], {"nested": {"deep": [{}]}})
UNKNOWN_KEYS = ("fooBar", "replica", "Model", "instance_type", "", " ", "$ref", "x-kubernetes-int-or-string",
                "a.b/c", "模型", "k" * 300, "__proto__", "metadata")


# --- from the model's JSON schema -------------------------------------------------------------------------

def _resolve(schema: dict, root: dict) -> dict:
    while "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[-1]]
    return schema


def _small_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=min(max_size, 24))


def from_schema(schema: dict, root: dict) -> st.SearchStrategy[Any]:
    """A strategy for values of one JSON-schema node (the subset pydantic emits for our models)."""
    schema = _resolve(schema, root)
    if "anyOf" in schema:
        return st.one_of([from_schema(s, root) for s in schema["anyOf"]])
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "null":
        return st.none()
    if kind == "boolean":
        return st.booleans()
    if kind == "integer":
        lo, hi = schema.get("minimum", -(2**31)), schema.get("maximum", 2**31)
        # Small values are the interesting ones (TP degrees, replicas, lengths); the bounds themselves too.
        return st.one_of(st.integers(lo, min(hi, lo + 64)), st.sampled_from([lo, hi]), st.integers(lo, hi))
    if kind == "number":
        return st.floats(schema.get("minimum"), schema.get("maximum"), allow_nan=False, allow_infinity=False)
    if kind == "string":
        max_len = schema.get("maxLength", 64)
        if "pattern" in schema:
            base = st.from_regex(schema["pattern"], fullmatch=True)
        else:
            base = _small_text(max_len)
        return base.filter(lambda s: schema.get("minLength", 0) <= len(s) <= max_len)
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), root), max_size=min(schema.get("maxItems", 3), 3))
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        required = set(schema.get("required", []))
        fixed = {k: from_schema(v, root) for k, v in props.items() if k in required}
        optional = {k: from_schema(v, root) for k, v in props.items() if k not in required}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict) and not props:  # a map, e.g. nodeSelector, resources.limits
            return st.dictionaries(st.from_regex(r"[a-z][a-z0-9./-]{0,20}", fullmatch=True),
                                   from_schema(extra, root), max_size=min(schema.get("maxProperties", 3), 3))
        if extra is True and not props:  # free-form, e.g. overrideNeuronConfig
            return st.dictionaries(st.sampled_from(("fused_qkv", "sequence_parallel_enabled",
                                                    "context_encoding_buckets", "on_device_sampling_config",
                                                    "quantized", "flash_decoding_enabled")),
                                   json_values(), max_size=3)
        return st.fixed_dictionaries(fixed, optional=optional)
    return json_values()


def json_values() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats(allow_nan=False, allow_infinity=False)
        | _small_text(40),
        lambda children: st.lists(children, max_size=3) | st.dictionaries(_small_text(10), children, max_size=3),
        max_leaves=8)


_SPEC_SCHEMA = NeuronInferenceServiceSpec.model_json_schema(by_alias=True)


def schema_specs() -> st.SearchStrategy[dict]:
    return from_schema(_SPEC_SCHEMA, _SPEC_SCHEMA)


# --- valid by construction ------------------------------------------------------------------------------------

@st.composite
def valid_specs(draw: st.DrawFn) -> dict:
    instance, tp = draw(st.sampled_from(VALID_SHAPES))
    spec: dict[str, Any] = {
        "model": {"uri": draw(st.sampled_from(MODELS[:2])), "revision": draw(st.sampled_from(("main", "v1", "abc123")))},
        "instanceType": instance, "tensorParallelSize": tp,
        "replicas": draw(st.integers(0, 1)),
        "artifacts": {"pvc": {"claimName": "artifacts"}},
    }
    engine = draw(st.fixed_dictionaries({}, optional={
        "maxNumSeqs": st.sampled_from((1, 4, 8, 32)),
        "maxModelLen": st.sampled_from((128, 1024, 4096, 8192)),
        "dtype": st.sampled_from(("bfloat16", "float16")),
        "extraArgs": st.lists(st.sampled_from(("--enable-prefix-caching", "--disable-log-requests")), max_size=2,
                              unique=True),
    }))
    if engine:
        spec["engine"] = engine
    runtime = draw(st.fixed_dictionaries({}, optional={
        "podLabels": st.dictionaries(st.from_regex(r"[a-z]{1,10}", fullmatch=True),
                                     st.from_regex(r"[a-z0-9]{0,10}", fullmatch=True), max_size=2),
        "env": st.lists(st.fixed_dictionaries({"name": st.from_regex(r"[A-Z_]{1,12}", fullmatch=True),
                                               "value": _small_text(30)}), max_size=2,
                        unique_by=lambda e: e["name"]),
    }))
    if runtime:
        spec["runtime"] = runtime
    return spec


# --- beyond the models ---------------------------------------------------------------------------------------

def hostile_strings() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HOSTILE_STRINGS),
        st.builds(lambda n, c: c * n, st.sampled_from(LONG_STRINGS), st.sampled_from(("a", "é", "🦙", "-"))),
        st.text(st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",)), max_size=40),
    )


def hostile_values() -> st.SearchStrategy[Any]:
    return st.one_of(st.sampled_from(WRONG_TYPES), st.sampled_from(HUGE_NUMBERS), hostile_strings(),
                     st.just({}), json_values())


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


def _set(doc: Any, path: tuple, value: Any) -> Any:
    if not path:
        return value
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    parent[path[-1]] = value
    return doc


def _delete(doc: Any, path: tuple) -> Any:
    if not path:
        return {}
    parent = doc
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    return doc


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict]) -> dict:
    spec: Any = copy.deepcopy(draw(base))
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(spec)
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(("replace", "replace", "unknown-key", "empty", "delete", "hostile-string")))
        target: Any = spec
        for part in path:
            target = target[part]
        if action == "unknown-key":
            if not isinstance(target, dict):
                path, target = (), spec
            if isinstance(target, dict):
                target[draw(st.sampled_from(UNKNOWN_KEYS))] = draw(hostile_values())
        elif action == "empty":
            spec = _set(spec, path, {} if draw(st.booleans()) else [])
        elif action == "delete" and path:
            spec = _delete(spec, path)
        elif action == "hostile-string":
            spec = _set(spec, path, draw(hostile_strings()))
        else:
            spec = _set(spec, path, draw(hostile_values()))
        if not isinstance(spec, dict):
            break
    return spec


def hostile_specs() -> st.SearchStrategy[Any]:
    return st.one_of(
        mutated(valid_specs()),
        mutated(schema_specs()),
        st.sampled_from(({}, [], "spec", 0, None, {"model": {}}, {"model": {"uri": ""}}, {"artifacts": {}},
                         {"engine": {}, "runtime": {}, "placement": {}})),
    )


def all_specs() -> st.SearchStrategy[Any]:
    return st.one_of(schema_specs(), valid_specs(), hostile_specs(), hostile_specs())


def generate(strategy: st.SearchStrategy[Any], count: int, random_seed: int) -> list[Any]:
    """``count`` distinct examples of ``strategy``, reproducible from ``random_seed`` (generation only: the
    checks run afterwards against the cluster, in one batch)."""
    out: list[Any] = []
    seen: set[str] = set()

    @seed(random_seed)
    @settings(max_examples=count * 3, database=None, phases=[Phase.generate], deadline=None,
              suppress_health_check=list(HealthCheck))
    @given(strategy)
    def collect(value: Any) -> None:
        key = json.dumps(value, sort_keys=True, default=str)
        if key not in seen and len(out) < count:
            seen.add(key)
            out.append(value)

    collect()
    return out


def main(argv: list[str] | None = None) -> int:
    """Print the corpus as one JSON array. The failure suite generates it in a fresh process: in-process, the same
    seed gave another corpus depending on which tests had run before in the session."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--seed", type=int, required=True)
    args = parser.parse_args(argv)
    json.dump(generate(all_specs(), args.count, args.seed), sys.stdout)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
