"""Multi-node, the pure parts: group env contract, engine env and argv (golden), per-rank NeuronConfig, per-rank
artifacts (compile as an Indexed Job, serve verification), resolvers and bounded waits. Real processes on loopback are
in test_runtime_multinode_processes.py."""

from __future__ import annotations

import io
import json
import logging
import os
import time

import pytest
from conftest import multi_node_kwargs, write_fake_group_artifacts

from neuron_runtime import artifacts, cli, constants, multinode, multinode_worker, peer_names, testhooks
from neuron_runtime.compile import compile_rank, run_compile
from neuron_runtime.compile_spec import compile_key
from neuron_runtime.contract import ServeConfig, read_contract
from neuron_runtime.deadlines import Deadline
from neuron_runtime.errors import ArtifactError, CompileError, RendezvousTimeout, SpecError
from neuron_runtime.neuron_config import build_neuron_config_kwargs, serve_override_neuron_config
from neuron_runtime.serving_paths import rank_artifact_dir
from neuron_runtime.topology import NodeRole

LEADER = "llama-g1-0.llama-peers.prod.svc.cluster.local"
WORKER1 = "llama-g1-1.llama-peers.prod.svc.cluster.local"
WORKER2 = "llama-g1-2.llama-peers.prod.svc.cluster.local"


def group_env(rank=1, nodes=2, **changes):
    peers = [LEADER, WORKER1, WORKER2][:nodes]
    env = {
        "NEURON_OPERATOR_RANK": str(rank),
        "NEURON_OPERATOR_WORLD_SIZE": str(nodes),
        "NEURON_OPERATOR_GROUP_INDEX": "1",
        "NEURON_OPERATOR_LEADER_ADDRESS": LEADER,
        "NEURON_OPERATOR_PEER_ADDRESSES": ",".join(peers),
        "NEURON_OPERATOR_RENDEZVOUS_TIMEOUT": "600",
    }
    env.update({k: str(v) for k, v in changes.items()})
    return {k: v for k, v in env.items() if v != "<unset>"}


@pytest.fixture
def spec2(make_spec):
    return make_spec(tp_degree=64, world_size=2)


# --- the env contract -------------------------------------------------------------------------------------------------


def test_group_config_from_the_operator_env(spec2):
    group = multinode.read_group_config(group_env(rank=1), spec2)
    assert group == multinode.GroupConfig(
        rank=1, world_size=2, group_index=1, leader_address=LEADER, peer_addresses=(LEADER, WORKER1),
        rendezvous_timeout=600.0,
    )  # fmt: skip
    assert group.role == NodeRole(rank=1, world_size=2) and not group.is_leader and group.own_address == WORKER1
    defaults = multinode.read_group_config(
        group_env(rank=0, NEURON_OPERATOR_GROUP_INDEX="<unset>", NEURON_OPERATOR_RENDEZVOUS_TIMEOUT="<unset>"), spec2
    )
    assert defaults.group_index == 0 and defaults.rendezvous_timeout == 600.0 and defaults.is_leader


@pytest.mark.parametrize(
    "changes, message",
    [
        (dict(NEURON_OPERATOR_RANK="2"), "NEURON_OPERATOR_RANK=2 is outside 0..1 for a 2-node group"),
        (dict(NEURON_OPERATOR_RANK="-1"), "outside 0..1"),
        (dict(NEURON_OPERATOR_RANK="one"), "NEURON_OPERATOR_RANK must be an integer"),
        (dict(NEURON_OPERATOR_RANK="<unset>"), "NEURON_OPERATOR_RANK is not set"),
        (dict(NEURON_OPERATOR_WORLD_SIZE="3"), "NEURON_OPERATOR_WORLD_SIZE=3 but the compile spec has world_size 2"),
        (dict(NEURON_OPERATOR_LEADER_ADDRESS="<unset>"), "NEURON_OPERATOR_LEADER_ADDRESS is not set"),
        (dict(NEURON_OPERATOR_PEER_ADDRESSES=LEADER), "lists 1 addresses, the group has 2 nodes"),
        (dict(NEURON_OPERATOR_PEER_ADDRESSES=f"{WORKER1},{LEADER}"), "must start with the leader"),
        (dict(NEURON_OPERATOR_PEER_ADDRESSES=f"{LEADER},{LEADER}"), "distinct DNS names"),
        (dict(NEURON_OPERATOR_RENDEZVOUS_TIMEOUT="0"), "NEURON_OPERATOR_RENDEZVOUS_TIMEOUT must be positive"),
        (dict(NEURON_OPERATOR_RENDEZVOUS_TIMEOUT="soon"), "must be a number of seconds"),
        (dict(NEURON_OPERATOR_GROUP_INDEX="-1"), "NEURON_OPERATOR_GROUP_INDEX must be >= 0"),
    ],
)
def test_bad_group_env_is_a_spec_error(spec2, changes, message):
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        multinode.read_group_config(group_env(**changes), spec2)


def test_bad_rank_exits_2_with_a_termination_message(monkeypatch, spec2, contract_env, tmp_path, termination_log):
    env = {**contract_env(spec2, tmp_path / "store"), **group_env(rank=7)}
    monkeypatch.setattr(os, "environ", env)
    assert cli.main(["serve"]) == constants.EXIT_BAD_SPEC
    assert "NEURON_OPERATOR_RANK=7 is outside 0..1" in termination_log.read_text()


def test_own_identity_check(spec2):
    group = multinode.read_group_config(group_env(rank=1), spec2)
    multinode.check_own_identity(group, "llama-g1-1")  # the pod's hostname is its own peer name: fine
    multinode.check_own_identity(group, "laptop")  # not a group pod (tests, dry runs): nothing to check
    with pytest.raises(SpecError, match=r"NEURON_OPERATOR_RANK=1 but this pod \(llama-g1-0\) is peer 0"):
        multinode.check_own_identity(group, "llama-g1-0")


# --- engine env and argv (golden) ---------------------------------------------------------------------------------


def test_multinode_env_golden(spec2, profile):
    group = multinode.read_group_config(group_env(rank=1), spec2)
    base = {
        "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/usr/local/lib:/opt/amazon/efa/lib",
        "NEURON_RT_VISIBLE_CORES": "0-31",  # device plugin: untouched
        "FI_PROVIDER": "tcp",  # a pod-level value wins for the tunables
        "MASTER_PORT": "29555",
        "WORLD_SIZE": "64",  # stale / wrong: the contract-derived value replaces it
        "NEURON_COMPILED_ARTIFACTS": "/elsewhere",
    }
    env = multinode.build_multinode_env(base, spec2, profile, "/store/key/rank-1", group, "10.0.0.2")
    assert env == {
        "PATH": "/usr/bin",
        "LD_LIBRARY_PATH": "/opt/aws/neuron/lib:/usr/local/lib:/opt/amazon/efa/lib",
        "NEURON_RT_VISIBLE_CORES": "0-31",
        "VLLM_NEURON_FRAMEWORK": "neuronx-distributed-inference",
        "NEURON_COMPILED_ARTIFACTS": "/store/key/rank-1",
        "NEURON_LOGICAL_NC_CONFIG": "1",
        "VLLM_RPC_TIMEOUT": "100000",
        "ENABLE_NEURON_MULTI_NODE": "true",
        "NEURON_RANK_ID": "1",
        "WORLD_SIZE": "2",  # nodes: the fork's gloo world, one process per node
        "MASTER_ADDR": LEADER,
        "MASTER_PORT": "29555",
        "NEURON_RT_ROOT_COMM_ID": "10.0.0.2:63423",  # an IP address (nrt-api-guide.rst), not the DNS name
        "NEURON_LOCAL_TP": "32",
        "FI_PROVIDER": "tcp",
        "FI_EFA_USE_DEVICE_RDMA": "1",
        "FI_EFA_FORK_SAFE": "1",
    }
    assert base["WORLD_SIZE"] == "64"  # pure
    assert multinode.env_overrides(base, env, profile) == [
        "WORLD_SIZE='64' on the pod, using '2'",
        "NEURON_COMPILED_ARTIFACTS='/elsewhere' on the pod, using '/store/key/rank-1'",
    ]


def test_operator_env_is_what_the_runtime_derives(spec2, profile):
    """The values the operator puts on the pod (for kubectl describe) equal the runtime's: no override warnings.
    Except NEURON_RT_ROOT_COMM_ID: the operator can only name the leader by DNS, the runtime puts the resolved IP."""
    group = multinode.read_group_config(group_env(rank=1), spec2)
    operator_env = {
        "ENABLE_NEURON_MULTI_NODE": "true", "NEURON_RANK_ID": "1", "WORLD_SIZE": "2", "MASTER_ADDR": LEADER,
        "MASTER_PORT": "29500", "NEURON_RT_ROOT_COMM_ID": f"{LEADER}:63423", "NEURON_LOCAL_TP": "32",
        "FI_PROVIDER": "efa", "FI_EFA_USE_DEVICE_RDMA": "1", "FI_EFA_FORK_SAFE": "1",
        "NEURON_COMPILED_ARTIFACTS": "/var/lib/neuron-operator/artifacts/key/rank-1",
    }  # fmt: skip
    env = multinode.build_multinode_env(
        operator_env, spec2, profile, "/var/lib/neuron-operator/artifacts/key/rank-1", group, "10.0.0.2"
    )
    assert multinode.env_overrides(operator_env, env, profile) == []
    assert {k: env[k] for k in operator_env} == dict(operator_env, NEURON_RT_ROOT_COMM_ID="10.0.0.2:63423")
    assert multinode.root_comm_note(operator_env, env, profile) == (
        "NEURON_RT_ROOT_COMM_ID=10.0.0.2:63423: the leader's resolved address (the Neuron runtime needs an IP "
        f"address), not the pod's {LEADER}:63423"
    )


def test_root_comm_id_is_the_leaders_ip(profile):
    mn = profile.multi_node
    assert multinode.root_comm_id({}, mn, "10.0.0.2", LEADER) == "10.0.0.2:63423"
    assert multinode.root_comm_id({"NEURON_RT_ROOT_COMM_ID": f"{LEADER}:46820"}, mn, "10.0.0.2", LEADER) == (
        "10.0.0.2:46820"  # the pod's port, the leader's address
    )
    assert multinode.root_comm_id({"NEURON_RT_ROOT_COMM_ID": "junk"}, mn, "10.0.0.2", LEADER) == "10.0.0.2:63423"
    assert multinode.root_comm_id({}, mn, "fd00::2", LEADER) == "[fd00::2]:63423"
    assert multinode.root_comm_id({}, mn, None, LEADER) == f"<IP of {LEADER}>:63423"  # dry run: nothing resolved


def test_every_member_picks_the_same_leader_address():
    assert peer_names.preferred_address(["fd00::2", "10.0.0.2", "10.0.0.9"]) == "10.0.0.2"
    assert peer_names.preferred_address(["fd00::2", "fd00::3"]) == "fd00::2"


def test_leader_and_worker_argv_golden(spec2, profile):
    serve_config = ServeConfig(port=8000, served_model_name="llama", extra_args=("--disable-log-requests",))
    kw = dict(model_path="/models/llama", adapter_paths={}, python="python")
    leader = multinode.build_leader_argv(
        spec2, serve_config, profile, multinode.read_group_config(group_env(rank=0), spec2), **kw
    )
    worker = multinode.build_worker_argv(
        spec2, serve_config, profile, multinode.read_group_config(group_env(rank=1), spec2), **kw
    )
    common = [
        "--model", "/models/llama",
        "--port", "8000",
        "--tensor-parallel-size", "64",  # total TP, as on one node; NxDI places the ranks
        "--max-num-seqs", "8",
        "--max-model-len", "4096",
        "--dtype", "bfloat16",
        "--device", "neuron",
        "--served-model-name", "llama",
    ]  # fmt: skip
    assert leader == ["python", "-m", "vllm.entrypoints.openai.api_server", *common,
                      "--override-neuron-config", '{"local_ranks_size":32,"start_rank_id":0}',
                      "--disable-log-requests"]  # fmt: skip
    assert worker == ["python", "-m", "neuron_runtime.multinode_worker", *common,
                      "--override-neuron-config", '{"local_ranks_size":32,"start_rank_id":32}',
                      "--disable-log-requests"]  # fmt: skip


def test_per_rank_overrides_follow_nxdi(make_spec, profile):
    spec = make_spec(tp_degree=96, world_size=3, override_neuron_config={"skip_warmup": True})
    # Compile: NxDI semantics (NX3 examples/multi_node.md): tp_degree = world_size = all ranks of all nodes.
    for rank, start in ((0, 0), (1, 32), (2, 64)):
        kwargs = build_neuron_config_kwargs(spec, profile, rank=rank)
        assert (kwargs["tp_degree"], kwargs["world_size"], kwargs["local_ranks_size"], kwargs["start_rank_id"]) == (
            96, 96, 32, start,
        )  # fmt: skip
        # Serve: only the node's slice is overridden at load, never tp_degree/world_size (unlike the fork's launcher).
        assert serve_override_neuron_config(spec, NodeRole(rank, 3)) == {
            "skip_warmup": True, "local_ranks_size": 32, "start_rank_id": start,
        }  # fmt: skip
    with pytest.raises(SpecError, match="rank 3 is outside 0..2"):
        build_neuron_config_kwargs(spec, profile, rank=3)
    # the rank keys are not compile inputs: one key for the whole group
    assert compile_key(spec) == compile_key(make_spec(tp_degree=96, world_size=3, override_neuron_config={
        "skip_warmup": True, "start_rank_id": 5}))  # fmt: skip


def test_rank_artifact_dir(spec2, contract_env, tmp_path):
    key = compile_key(spec2)
    pvc = read_contract(contract_env(spec2, "/var/lib/neuron-operator/artifacts"))
    assert rank_artifact_dir(pvc, {}, 1) == f"/var/lib/neuron-operator/artifacts/{key}/rank-1"
    s3_env = contract_env(spec2, "s3://bucket/prefix")
    s3 = read_contract(s3_env)
    assert rank_artifact_dir(s3, s3_env, 0) == str(tmp_path / "local-artifacts" / key / "rank-0")


def test_fake_engine_only_in_test_mode():
    argv = ["python", "-m", "vllm.entrypoints.openai.api_server", "--port", "8000"]
    assert testhooks.engine_command(argv, {"NEURON_RUNTIME_FAKE_ENGINE": "1"}, "leader", "", 8000) == argv
    test_env = {"NEURON_RUNTIME_FAKE_ENGINE": "1", "NEURON_RUNTIME_TEST_MODE": "1"}
    assert testhooks.engine_command(argv, test_env, "worker", "127.0.0.3", 8000) == [
        "python", "-m", "neuron_runtime.fake_engine", "--role", "worker", "--host", "127.0.0.3", "--port", "8000",
        "--parent-pid", str(os.getpid()), "--", *argv,
    ]  # fmt: skip


@pytest.mark.parametrize(
    "rank, role, module", [(0, "leader", "vllm.entrypoints.openai.api_server"), (1, "worker", "neuron_runtime.multinode_worker")]
)
def test_serve_dry_run(spec2, contract_env, tmp_path, rank, role, module):
    env = {**contract_env(spec2, tmp_path / "store"), **group_env(rank=rank)}
    out = io.StringIO()
    assert multinode.run_multinode_serve(read_contract(env), env, dry_run=True, out=out, hostname="x") == 0
    plan = json.loads(out.getvalue())
    key = compile_key(spec2)
    assert plan["role"] == role and plan["rank"] == rank and plan["peers"] == [LEADER, WORKER1]
    assert plan["artifact"] == str(tmp_path / "store" / key / f"rank-{rank}")
    assert plan["argv"][1:3] == ["-m", module]
    assert plan["rendezvous"] == {"port": 29400, "timeout_seconds": 600.0}
    assert plan["env"]["set"]["NEURON_RANK_ID"] == str(rank)
    assert plan["env"]["set"]["NEURON_RT_ROOT_COMM_ID"] == f"<IP of {LEADER}>:63423"  # a dry run resolves nothing
    assert plan["env"]["set"]["NEURON_COMPILED_ARTIFACTS"] == plan["artifact"]
    assert plan["neuron_config"]["start_rank_id"] == 32 * rank
    assert not (tmp_path / "store").exists()


# --- resolvers and bounded waits ------------------------------------------------------------------------------------


def test_hosts_parsing_and_test_resolver(tmp_path):
    assert peer_names.parse_hosts("a=127.0.0.2, b=127.0.0.3") == {"a": ["127.0.0.2"], "b": ["127.0.0.3"]}
    hosts = tmp_path / "hosts"
    hosts.write_text("# comment\na 127.0.0.2\n")
    resolve = testhooks.test_hosts_resolver(f"@{hosts}")
    assert resolve("a") == ["127.0.0.2"] and resolve("b") == []
    hosts.write_text("a 127.0.0.2\nb 127.0.0.3\n")  # re-read on every lookup
    assert resolve("b") == ["127.0.0.3"]
    assert testhooks.test_hosts_resolver("@/nonexistent")("a") == []


def test_test_hosts_are_ignored_outside_test_mode():
    assert testhooks.resolver_from_env({"NEURON_RUNTIME_TEST_HOSTS": "a=1.2.3.4"}) is peer_names.system_resolver
    assert testhooks.resolver_from_env({"NEURON_RUNTIME_TEST_HOSTS": "a=1.2.3.4", "NEURON_RUNTIME_TEST_MODE": "1"})(
        "a"
    ) == ["1.2.3.4"]
    assert testhooks.bind_host_from_env({"NEURON_RUNTIME_TEST_BIND_HOST": "127.0.0.3"}) == ""
    assert peer_names.system_resolver("localhost")  # the real resolver works for a name that exists
    assert peer_names.system_resolver("no-such-host.invalid") == []


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_waiting_logs_progress_then_times_out(caplog):
    clock = FakeClock()
    deadline = Deadline(12, clock)
    names = {"w": ["10.0.0.3"]}  # the leader never resolves
    with caplog.at_level(logging.INFO), pytest.raises(RendezvousTimeout) as info:
        peer_names.wait_for_names("lead", ("lead", "w"), lambda n: names.get(n, []), deadline, sleep=clock.sleep)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
    assert lines == [
        "waiting for leader lead to resolve (0s/12s)",
        "waiting for leader lead to resolve (5s/12s)",
        "waiting for leader lead to resolve (10s/12s)",
    ]
    assert str(info.value).startswith("multi-node rendezvous timed out after 12s waiting for leader lead to resolve;")
    assert info.value.exit_code == constants.EXIT_RENDEZVOUS_TIMEOUT


def test_waiting_for_peers_names_the_missing_ones(caplog):
    clock = FakeClock()
    names = {"lead": ["10.0.0.2"], "w1": ["10.0.0.3"]}
    with caplog.at_level(logging.INFO), pytest.raises(RendezvousTimeout, match="peers to resolve: w2"):
        peer_names.wait_for_names(
            "lead", ("lead", "w1", "w2"), lambda n: names.get(n, []), Deadline(3, clock), sleep=clock.sleep
        )
    names["w2"] = ["10.0.0.4"]
    found = peer_names.wait_for_names(
        "lead", ("lead", "w1", "w2"), lambda n: names.get(n, []), Deadline(3, clock), sleep=clock.sleep
    )
    assert found.addresses == (("10.0.0.2",), ("10.0.0.3",), ("10.0.0.4",))


def test_worker_module_refuses_to_run_as_leader_or_single_node():
    assert multinode_worker.check_env({"ENABLE_NEURON_MULTI_NODE": "true", "NEURON_RANK_ID": "2"}) is None
    assert "rank > 0" in multinode_worker.check_env({"ENABLE_NEURON_MULTI_NODE": "true", "NEURON_RANK_ID": "0"})
    assert "ENABLE_NEURON_MULTI_NODE" in multinode_worker.check_env({"NEURON_RANK_ID": "1"})


# --- per-rank artifacts: verification -----------------------------------------------------------------------------


def test_rank_artifact_verification(spec2, profile, tmp_path):
    key = compile_key(spec2)
    key_dir = write_fake_group_artifacts(tmp_path, spec2)
    assert artifacts.verify_group_manifest(key_dir, key, spec2)["ranks"][1] == {
        "rank": 1, "dir": "rank-1", "start_rank_id": 32, "local_ranks_size": 32,
    }  # fmt: skip
    rank1 = os.path.join(key_dir, "rank-1")
    assert artifacts.verify_artifact_dir(rank1, key, spec2, profile, rank=1)["rank"] == 1
    assert sorted(os.listdir(os.path.join(rank1, "weights")))[0] == "tp32_sharded_checkpoint.safetensors"
    with pytest.raises(ArtifactError, match="for rank 1 of 2 nodes, expected rank 0 of 2"):
        artifacts.verify_artifact_dir(rank1, key, spec2, profile, rank=0)
    os.remove(os.path.join(rank1, "weights", "tp63_sharded_checkpoint.safetensors"))
    with pytest.raises(ArtifactError, match="missing.*tp63_sharded"):
        artifacts.verify_artifact_dir(rank1, key, spec2, profile, rank=1)
    os.remove(os.path.join(key_dir, constants.MANIFEST_FILE))
    with pytest.raises(ArtifactError, match="no group manifest.json"):
        artifacts.verify_group_manifest(key_dir, key, spec2)


# --- per-rank artifacts: compile as an Indexed Job ----------------------------------------------------------------


class FakeRankCompile:
    """Writes what NxDI compile() writes for one node: its ranks' shards only."""

    def __init__(self):
        self.calls = []

    def __call__(self, spec, profile, model_path, model_config, kwargs, draft_path, staging):
        self.calls.append(kwargs)
        os.makedirs(os.path.join(staging, "weights"))
        with open(os.path.join(staging, "neuron_config.json"), "w") as f:
            json.dump({"neuron_config": kwargs}, f)
        with open(os.path.join(staging, "model.pt"), "wb") as f:
            f.write(b"traced")
        for r in range(kwargs["start_rank_id"], kwargs["start_rank_id"] + kwargs["local_ranks_size"]):
            open(os.path.join(staging, "weights", f"tp{r}_sharded_checkpoint.safetensors"), "wb").close()


@pytest.fixture
def model_dir(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "torch_dtype": "bfloat16"}))
    return path


def test_indexed_job_compiles_each_rank_then_rank0_writes_the_group(make_spec, contract_env, tmp_path, model_dir):
    spec = make_spec(model_uri=str(model_dir), tp_degree=4, world_size=2, max_num_seqs=2, max_model_len=128)
    key = compile_key(spec)
    store = tmp_path / "store"
    fake = FakeRankCompile()
    env1 = contract_env(spec, store, JOB_COMPLETION_INDEX="1")
    assert run_compile(read_contract(env1), env1, compile_fn=fake) == 0
    assert fake.calls[0]["start_rank_id"] == 2 and fake.calls[0]["local_ranks_size"] == 2
    assert artifacts.LocalStore(str(store)).lookup(key) is None  # one rank is not the group
    assert sorted(os.listdir(store / key / "rank-1" / "weights")) == [
        "tp2_sharded_checkpoint.safetensors", "tp3_sharded_checkpoint.safetensors",
    ]  # fmt: skip

    env0 = contract_env(spec, store, JOB_COMPLETION_INDEX="0")
    assert run_compile(read_contract(env0), env0, compile_fn=fake) == 0
    assert fake.calls[1]["start_rank_id"] == 0
    group = json.loads((store / key / constants.MANIFEST_FILE).read_text())
    assert group["key"] == key and group["world_size"] == 2 and group["layout"] == "per-rank"
    assert [r["dir"] for r in group["ranks"]] == ["rank-0", "rank-1"]
    rank0 = json.loads((store / key / "rank-0" / constants.MANIFEST_FILE).read_text())
    assert (rank0["rank"], rank0["world_size"], rank0["neuron_config"]["world_size"]) == (0, 2, 4)
    assert os.listdir(store / constants.STAGING_DIR) == []

    # a retried pod of a published rank, and any pod once the group is complete, compile nothing
    assert run_compile(read_contract(env1), env1, compile_fn=fake) == 0
    assert len(fake.calls) == 2


def test_rank0_times_out_when_a_rank_never_publishes(make_spec, contract_env, tmp_path, model_dir):
    spec = make_spec(model_uri=str(model_dir), tp_degree=4, world_size=2, max_num_seqs=2, max_model_len=128)
    env = contract_env(spec, tmp_path / "store", JOB_COMPLETION_INDEX="0", NEURON_RUNTIME_COMPILE_GROUP_TIMEOUT="0.3")
    with pytest.raises(CompileError, match=r"timed out after 0s waiting for the compile pods of ranks \[1\]"):
        run_compile(read_contract(env), env, compile_fn=FakeRankCompile())
    assert (tmp_path / "store" / compile_key(spec) / "rank-0" / constants.MANIFEST_FILE).is_file()
    assert not (tmp_path / "store" / compile_key(spec) / constants.MANIFEST_FILE).exists()


def test_rank_compile_to_s3_and_fetch_only_ones_rank(make_spec, contract_env, tmp_path, model_dir, fake_s3, profile):
    spec = make_spec(model_uri=str(model_dir), tp_degree=4, world_size=2, max_num_seqs=2, max_model_len=128)
    key = compile_key(spec)
    for rank in (1, 0):
        env = contract_env(spec, "s3://bucket/art", JOB_COMPLETION_INDEX=str(rank))
        assert run_compile(read_contract(env), env, compile_fn=FakeRankCompile(), s3_client=fake_s3) == 0
    assert fake_s3.uploads[-1] == f"art/{key}/manifest.json"  # the group manifest goes up last
    assert f"art/{key}/rank-1/manifest.json" in fake_s3.uploads
    store = artifacts.S3Store("s3://bucket/art", fake_s3, str(tmp_path / "local"))
    rank1 = store.fetch_rank(key, 1)
    assert rank1 == str(tmp_path / "local" / key / "rank-1")
    assert not (tmp_path / "local" / key / "rank-0").exists()  # a node downloads only its own slice
    artifacts.verify_group_manifest(os.path.dirname(rank1), key, spec)
    assert artifacts.verify_artifact_dir(rank1, key, spec, profile, rank=1)["rank"] == 1


def test_fetch_rank_refuses_an_incomplete_group(make_spec, tmp_path, fake_s3):
    spec = make_spec(tp_degree=4, world_size=2)
    store = artifacts.S3Store("s3://bucket/art", fake_s3, str(tmp_path / "local"))
    with pytest.raises(ArtifactError, match="no group manifest.json"):
        store.fetch_rank(compile_key(spec), 0)


@pytest.mark.parametrize(
    "index, world, message",
    [
        ("", 2, "needs JOB_COMPLETION_INDEX: run it as an Indexed Job with completions = parallelism = 2"),
        ("2", 2, "JOB_COMPLETION_INDEX=2 is outside 0..1"),
        ("x", 2, "must be an integer"),
        ("1", 1, "single-node compile is one pod"),
    ],
)
def test_compile_rank_validation(make_spec, index, world, message):
    spec = make_spec(tp_degree=4, world_size=world)
    with pytest.raises(SpecError, match=message):
        compile_rank({"JOB_COMPLETION_INDEX": index}, spec)


def test_compile_rank_defaults(make_spec):
    assert compile_rank({}, make_spec()) == 0
    assert compile_rank({"JOB_COMPLETION_INDEX": "0"}, make_spec()) == 0
    assert compile_rank({"JOB_COMPLETION_INDEX": "1"}, make_spec(tp_degree=4, world_size=2)) == 1


def test_compile_dry_run_for_a_rank(make_spec, contract_env, tmp_path):
    spec = make_spec(tp_degree=64, world_size=2)
    env = contract_env(spec, tmp_path / "store", JOB_COMPLETION_INDEX="1")
    out = io.StringIO()
    assert run_compile(read_contract(env), env, dry_run=True, out=out) == 0
    plan = json.loads(out.getvalue())
    assert plan["artifact"] == str(tmp_path / "store" / compile_key(spec) / "rank-1")
    assert (plan["rank"], plan["world_size"], plan["group_manifest"]) == (1, 2, "rank 0")
    assert plan["neuron_config"]["start_rank_id"] == 32


def test_group_manifest_refuses_mixed_software(make_spec):
    spec = make_spec(tp_degree=4, world_size=2)
    key = compile_key(spec)
    ranks = {r: artifacts.build_rank_manifest(key, spec, {"vllm": v}, multi_node_kwargs(spec, r), r)
             for r, v in ((0, "0.7.2"), (1, "0.7.3"))}  # fmt: skip
    with pytest.raises(CompileError, match="different software versions"):
        artifacts.build_group_manifest(key, spec, ranks)
    with pytest.raises(CompileError, match="needs ranks 0..1"):
        artifacts.build_group_manifest(key, spec, {0: ranks[0]})


def test_a_reset_connection_reads_as_closed():
    """A peer killed with unread data resets the TCP connection instead of closing it: still "connection closed"."""
    import socket
    import struct

    from neuron_runtime.peer_link import Link, LinkClosed

    with socket.create_server(("127.0.0.1", 0)) as server:
        a = socket.create_connection(server.getsockname())
        b, _ = server.accept()
    link = Link(a, "peer")
    a.sendall(b"never read by b")
    time.sleep(0.1)
    b.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close with RST
    b.close()
    time.sleep(0.1)
    with pytest.raises(LinkClosed, match=r"^connection closed \(reset by peer\)$"):
        link.recv(2)
    link.close()
