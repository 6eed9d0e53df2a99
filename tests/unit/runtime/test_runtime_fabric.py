"""The fabric check before a multi-node rendezvous: fi_info's output and exit status -> the reason, exit code 7."""

from __future__ import annotations

import os
import stat

import pytest

from neuron_runtime import constants, fabric
from neuron_runtime.errors import FabricUnavailable

# fi_info -p efa on an EFA-enabled instance (short form, ofiwg/libfabric util/info.c print_short_info)
EFA_OUTPUT = """provider: efa
    fabric: efa
    domain: rdmap16s27-rdm
    version: 122.0
    type: FI_EP_RDM
    protocol: FI_PROTO_EFA
provider: efa
    fabric: efa
    domain: rdmap16s27-dgrm
    version: 122.0
    type: FI_EP_DGRAM
    protocol: FI_PROTO_EFA
"""
COMMAND = ["/opt/amazon/efa/bin/fi_info", "-p", "efa"]


def test_listed_providers():
    assert fabric.listed_providers(EFA_OUTPUT) == ["efa"]
    assert fabric.listed_providers("provider: tcp;ofi_rxm\n    fabric: 10.0.0.0/24\n") == ["tcp", "ofi_rxm"]
    assert fabric.listed_providers("") == []


def test_fabric_problem():
    assert fabric.fabric_problem("efa", fabric.ProbeResult(COMMAND, 0, EFA_OUTPUT)) is None
    assert fabric.fabric_problem("efa", fabric.ProbeResult(COMMAND, 61, "", "fi_getinfo: -61\n")) == (
        "`/opt/amazon/efa/bin/fi_info -p efa` exited 61 (fi_getinfo: -61)"
    )
    assert fabric.fabric_problem("efa", fabric.ProbeResult(COMMAND, 0, "provider: tcp\n")) == (
        "`/opt/amazon/efa/bin/fi_info -p efa` listed no efa provider"
    )
    assert fabric.fabric_problem("efa", fabric.ProbeResult(["fi_info", "-p", "efa"], None, error="not found")) == (
        "`fi_info -p efa` could not run (not found)"
    )


def fake_runner(result, calls):
    def run(provider, env):
        calls.append((provider, dict(env)))
        return result

    return run


def test_missing_efa_is_exit_7_with_what_to_check():
    calls = []
    runner = fake_runner(fabric.ProbeResult(COMMAND, 61, "", "fi_getinfo: -61"), calls)
    with pytest.raises(FabricUnavailable) as info:
        fabric.check_fabric({"FI_PROVIDER": "efa"}, "rank 1 (llm-g0-1.llm-peers)", runner=runner)
    assert info.value.exit_code == constants.EXIT_FABRIC_UNAVAILABLE == 7
    message = str(info.value)
    assert message.startswith(
        "EFA unavailable on rank 1 (llm-g0-1.llm-peers): `/opt/amazon/efa/bin/fi_info -p efa` exited 61 "
        "(fi_getinfo: -61). Multi-node serving needs EFA in every pod of the group: check that the EFA device plugin "
    )
    for hint in ("vpc.amazonaws.com/efa", "security group", "/opt/amazon/efa"):
        assert hint in message
    assert calls[0][0] == "efa"


def test_the_provider_is_the_engines():
    calls = []
    fabric.check_fabric({"FI_PROVIDER": "tcp"}, "rank 0", runner=fake_runner(
        fabric.ProbeResult(["fi_info", "-p", "tcp"], 0, "provider: tcp\n"), calls))  # fmt: skip
    assert calls[0][0] == "tcp"
    with pytest.raises(FabricUnavailable, match=r"^libfabric provider 'tcp' \(FI_PROVIDER\) unavailable on rank 0"):
        fabric.check_fabric({"FI_PROVIDER": "tcp"}, "rank 0", runner=fake_runner(
            fabric.ProbeResult(["fi_info", "-p", "tcp"], 61), []))  # fmt: skip
    fabric.check_fabric({"FI_PROVIDER": "efa,tcp"}, "rank 0", runner=fake_runner(None, calls))  # a list: not asked
    assert len(calls) == 1


def test_skippable_only_in_test_mode():
    calls = []
    runner = fake_runner(fabric.ProbeResult(COMMAND, 61), calls)
    skip = {constants.ENV_TEST_SKIP_FABRIC_CHECK: "1", constants.ENV_TEST_MODE: "1"}
    fabric.check_fabric(skip, "rank 0", runner=runner)
    assert calls == []
    with pytest.raises(FabricUnavailable):
        fabric.check_fabric({constants.ENV_TEST_SKIP_FABRIC_CHECK: "1"}, "rank 0", runner=runner)
    assert len(calls) == 1


def write_script(path, text):
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_runner_runs_fi_info_with_the_engine_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    write_script(bin_dir / "fi_info", '#!/bin/sh\necho "provider: $2"\necho "ld=$LD_LIBRARY_PATH"\n')
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "LD_LIBRARY_PATH": "/opt/amazon/efa/lib"}
    result = fabric.run_fi_info("efa", env)
    assert result.command == [str(bin_dir / "fi_info"), "-p", "efa"]
    assert (result.returncode, result.stdout) == (0, "provider: efa\nld=/opt/amazon/efa/lib\n")
    assert fabric.fabric_problem("efa", result) is None


def test_runner_without_fi_info(tmp_path):
    if os.access(os.path.join(fabric.EFA_BIN_DIR, fabric.FI_INFO), os.X_OK):  # pragma: no cover - EFA hosts
        pytest.skip("this host has the EFA user space")
    result = fabric.run_fi_info("efa", {"PATH": str(tmp_path)})
    assert result.returncode is None and "no fi_info on PATH or in /opt/amazon/efa/bin" in result.error
    assert fabric.fabric_problem("efa", result).startswith("`fi_info -p efa` could not run (no fi_info")
