"""Benchmark: a multi-node replica group (2 ranks on trn1.32xlarge): apply -> Ready, the API writes it costs,
and the time for the whole group to be recreated and Ready again after one member pod is deleted.

`python -m tests.bench.bench_group --rounds 3` (measures, never asserts).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid

import yaml

from .bench_converge import ROOT, WRITE_VERBS, cluster_with_crds, scrape, sh, start_operator, store_manifests

GV = "inference.neuron-operator.io/v1alpha1"


def spare_nodes() -> str:
    out = sh(sys.executable, str(ROOT / "hack" / "fake_nodes.py"), "--nodes", "trn1.32xlarge=2", "--cpu-nodes", "0")
    nodes = [n for n in yaml.safe_load_all(out) if n]
    for n in nodes:
        n["metadata"]["name"] = n["metadata"]["name"].replace("trn1-32xlarge-", "trn1-32xlarge-b")
        n["metadata"]["labels"]["kubernetes.io/hostname"] = n["metadata"]["name"]
    return yaml.safe_dump_all(nodes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cluster_with_crds()
    nodes = spare_nodes()
    sh("kubectl", "apply", "-f", "-", input=nodes)

    from neuron_operator.kube import KubeClient

    client = KubeClient()
    operator, metrics_port, log = start_operator("bench-group")
    ns = f"bench-{uuid.uuid4().hex[:6]}"

    def ready() -> bool:
        obj = client.get(GV, "NeuronInferenceService", ns, "group") or {}
        st = obj.get("status") or {}
        return st.get("phase") == "Ready" and st.get("observedGeneration") == obj["metadata"]["generation"] \
            and st.get("readyReplicas") == 1

    def member_uids() -> set[str]:
        pods = client.list("v1", "Pod", ns, label_selector="inference.neuron-operator.io/service=group")
        return {p["metadata"]["uid"] for p in pods if not p["metadata"].get("deletionTimestamp")}

    try:
        sh("kubectl", "create", "namespace", ns)
        sh("kubectl", "apply", "-f", "-", input=store_manifests(ns))
        before = scrape(metrics_port)
        start = time.monotonic()
        sh("kubectl", "apply", "-n", ns, "-f", "-", input=yaml.safe_dump({
            "apiVersion": GV, "kind": "NeuronInferenceService", "metadata": {"name": "group"},
            "spec": {"model": {"uri": "hf://meta-llama/Llama-3.1-70B-Instruct"}, "instanceType": "trn1.32xlarge",
                     "tensorParallelSize": 64, "nodesPerReplica": 2, "artifacts": {"pvc": {"claimName": "artifacts"}}}}))
        while not ready():
            time.sleep(0.05)
        print(f"group apply -> Ready: {time.monotonic() - start:.2f}s")
        time.sleep(3)
        after = scrape(metrics_port)
        delta = {v: int(after.get(v, 0) - before.get(v, 0)) for v in sorted(set(after) | set(before))}
        print(f"API writes to converge one 2-node group: {sum(delta.get(v, 0) for v in WRITE_VERBS)} {delta}")
        times, writes = [], []
        for _ in range(args.rounds):
            old = member_uids()
            before = scrape(metrics_port)
            start = time.monotonic()
            sh("kubectl", "delete", "pod", "group-g0-1", "-n", ns, "--wait=false")
            while True:
                uids = member_uids()
                if len(uids) == 2 and not (uids & old) and ready():
                    break
                time.sleep(0.05)
            times.append(time.monotonic() - start)
            time.sleep(3)
            after = scrape(metrics_port)
            writes.append(sum(int(after.get(v, 0) - before.get(v, 0)) for v in WRITE_VERBS))
            print(f"  member deleted -> whole group recreated and Ready: {times[-1]:.2f}s, {writes[-1]} API writes")
        print(f"group recreation: median {statistics.median(times):.2f}s (min {min(times):.2f}, max {max(times):.2f}); "
              f"writes median {statistics.median(writes)} over {args.rounds} rounds "
              "(later rounds include the restart backoff of 10s, 20s, ...)")
    finally:
        operator.terminate()
        operator.wait(timeout=20)
        log.close()
        sh("kubectl", "delete", "namespace", ns, "--wait=false")
        sh("kubectl", "delete", "pv", f"bench-{ns}", "--wait=false")
        sh("kubectl", "delete", "-f", "-", "--wait=false", input=nodes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
