"""Benchmark: observing a large vCenter (issue 4).

Side by side, in one run, against one vcsim-lab serving N generated VMs:
  bare     a plain pyVmomi PropertyCollector retrieval (ContainerView + RetrievePropertiesEx paging) of
           exactly the properties `observe` reads — the reference;
  observe  reconciler's `collect_inventory` + `to_observed` (what `plan` does);
  walk     reading the same facts by walking managed-object attributes, on a sample of VMs and
           extrapolated to N (walking all of them takes too long and made vcsim drop connections).

Targets: observe ≤ 1.0× bare; walk ≥ 100× observe. Usage:
    .venv/bin/python benchmarks/bench_observe.py [--vms 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from pyVmomi import vim

from reconciler.adapters.vsphere import collect
from reconciler.adapters.vsphere.parse import to_observed
from reconciler.adapters.vsphere.session import VsphereSession
from reconciler.lab import inventory as inv
from reconciler.lab.vcsim import VcsimProcess


def bare_retrieval(session: VsphereSession) -> int:
    """The reference: one paged retrieval of the same properties, results left as pyVmomi objects."""
    objects = session.call(
        lambda si: collect.retrieve_pyvmomi(
            si,
            {
                vim.VirtualMachine: collect.VM_PROPERTIES,
                vim.HostSystem: collect.HOST_PROPERTIES,
                vim.Folder: collect.FOLDER_PROPERTIES,
                vim.Datacenter: collect.DATACENTER_PROPERTIES,
            },
        )
    )
    return len(objects)


def observe(session: VsphereSession) -> int:
    _, vms = to_observed("bench", collect.collect_inventory(session))
    return len(vms)


def walk(session: VsphereSession, sample: int) -> tuple[int, float]:
    """Attribute walking on `sample` VMs: seconds per VM."""
    si = session.connect()
    view = si.content.viewManager.CreateContainerView(si.content.rootFolder, [vim.VirtualMachine], True)
    vms = list(view.view)[:sample]
    start = time.perf_counter()
    for vm in vms:
        config = vm.config
        _ = (vm.name, vm.parent, config.instanceUuid, config.uuid, config.version, config.changeTrackingEnabled,
             config.keyId, config.hardware.device, vm.runtime.host, vm.runtime.powerState,
             vm.runtime.consolidationNeeded, vm.guest.toolsRunningStatus, vm.snapshot, vm.customValue)
    elapsed = time.perf_counter() - start
    view.Destroy()
    return len(vms), elapsed / max(1, len(vms))


def timed(fn, *args) -> float:
    start = time.perf_counter()
    fn(*args)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--walk-sample", type=int, default=50)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-observe-") as tmp:
        state = Path(tmp)
        started = time.perf_counter()
        inventory = inv.scaled(args.vms)
        process = VcsimProcess(None, inventory.write_json(state / "inventory.json"), state / "state", True)
        endpoints = process.start()
        print(f"vcsim-lab with {args.vms} VMs ready in {time.perf_counter() - started:.1f} s")
        try:
            session = VsphereSession(endpoints.sdk, endpoints.username, endpoints.password,
                                     thumbprint=endpoints.thumbprint_sha256)
            assert observe(session) == args.vms
            bare, ours = [], []
            for _ in range(args.repeat):  # interleaved, so load on the machine hits both alike
                bare.append(timed(bare_retrieval, session))
                ours.append(timed(observe, session))
            walked, per_vm = walk(session, args.walk_sample)
            session.close()
        finally:
            process.stop()

    b, o = statistics.median(bare), statistics.median(ours)
    walk_total = per_vm * args.vms
    print(f"bare PropertyCollector retrieval: {b:.2f} s (median of {args.repeat}: {[round(x, 2) for x in bare]})")
    print(f"reconciler observe:               {o:.2f} s (median of {args.repeat}: {[round(x, 2) for x in ours]})")
    print(f"attribute walk:                   {per_vm * 1000:.1f} ms/VM on {walked} VMs → {walk_total:.0f} s for "
          f"{args.vms}")
    print(f"observe / bare = {o / b:.2f}× (target ≤ 1.0×); walk / observe = {walk_total / o:.0f}× (target ≥ 100×)")


if __name__ == "__main__":
    main()
