package main

import (
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

// snapshotOwner returns the VM of a snapshot (nil when ref is not a snapshot).
func snapshotOwner(ref types.ManagedObjectReference) *simulator.VirtualMachine {
	if ref.Type != "VirtualMachineSnapshot" {
		return nil
	}
	snap, ok := simulator.Map.Get(ref).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return nil
	}
	vm, _ := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	return vm
}

// setTaskEntity names the VM as a snapshot task's entity: vSphere does, and pyVmomi rejects a task
// whose info.entity is a snapshot (not a ManagedEntity), which stock vcsim reports.
func setTaskEntity(t *simulator.Task, vm *simulator.VirtualMachine) {
	simulator.Map.Update(t, []types.PropertyChange{
		{Name: "info.entity", Val: vm.Self},
		{Name: "info.entityName", Val: vm.Name},
	})
}

func (f *front) refuseCreateSnapshot(w http.ResponseWriter, req *types.CreateSnapshot_Task) bool {
	vmObj, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return false
	}
	f.lab.mu.Lock()
	vm := f.lab.byRef[req.This.Value]
	var fault types.BaseMethodFault
	msg := ""
	name := ""
	if vm != nil {
		name = vm.name
	}
	switch {
	case f.hostDisconnected(vmObj):
		fault, msg = &types.HostNotConnected{}, "The operation is not allowed in the current connection state of the host."
	case f.lab.fire("snapshot-create-fails", name) != nil:
		fault = &types.SnapshotFault{}
		msg = "An error occurred while saving the snapshot: Failed to write to the snapshot file (lab fault)."
	case req.Quiesce && vmObj.Guest.ToolsRunningStatus != "guestToolsRunning":
		fault = &types.ToolsUnavailable{}
		msg = "Cannot complete operation because VMware Tools is not running in this virtual machine."
	case req.Quiesce && f.lab.fire("quiesce-fails", name) != nil:
		fault = &types.ApplicationQuiesceFault{}
		msg = "An error occurred while quiescing the virtual machine. See the virtual machine's event log for details."
	}
	f.lab.mu.Unlock()
	if fault == nil {
		return false
	}
	ref := failedTask(vmObj, "createSnapshot", fault, msg)
	writeResponse(w, "CreateSnapshot_TaskResponse", &types.CreateSnapshot_TaskResponse{Returnval: ref})
	return true
}

func (f *front) refuseRemoveSnapshot(w http.ResponseWriter, req *types.RemoveSnapshot_Task) bool {
	snap, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return false
	}
	vmObj, _ := simulator.Map.Get(snap.Vm).(*simulator.VirtualMachine)
	f.lab.mu.Lock()
	name := ""
	if vm := f.lab.byRef[snap.Vm.Value]; vm != nil {
		name = vm.name
	}
	var fault types.BaseMethodFault
	msg := ""
	switch {
	case vmObj != nil && f.hostDisconnected(vmObj):
		fault, msg = &types.HostNotConnected{}, "The operation is not allowed in the current connection state of the host."
	case f.lab.fire("snapshot-remove-fails", name) != nil:
		fault = &types.GenericVmConfigFault{Reason: "msg.snapshot.vigor.consolidate.error"}
		msg = "An error occurred while consolidating disks: Failed to lock the file (lab fault)."
	}
	f.lab.mu.Unlock()
	if fault == nil {
		return false
	}
	ref := failedTask(snap, "removeSnapshot", fault, msg)
	if vmObj != nil {
		setTaskEntity(simulator.Map.Get(ref).(*simulator.Task), vmObj)
	}
	writeResponse(w, "RemoveSnapshot_TaskResponse", &types.RemoveSnapshot_TaskResponse{Returnval: ref})
	return true
}

func (f *front) hostDisconnected(vmObj *simulator.VirtualMachine) bool {
	if vmObj.Runtime.Host == nil {
		return false
	}
	host, ok := simulator.Map.Get(*vmObj.Runtime.Host).(*simulator.HostSystem)
	return ok && host.Runtime.ConnectionState != types.HostSystemConnectionStateConnected
}

// failedTask creates a task that ends in error with fault, as vSphere reports a failed operation.
func failedTask(entity mo.Reference, name string, fault types.BaseMethodFault, msg string) types.ManagedObjectReference {
	task := simulator.CreateTask(entity, name, func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
		return nil, fault
	})
	ref := task.Run()
	simulator.Map.Update(task, []types.PropertyChange{
		{Name: "info.error", Val: &types.LocalizedMethodFault{Fault: fault, LocalizedMessage: msg}},
	})
	return ref
}

// freeze copies each disk's live bytes aside for a new snapshot and points the snapshot's disk
// backings at the copies, with the change ID each disk had at that moment (as vSphere shows it).
func (f *front) freeze(vmRef types.ManagedObjectReference, result types.AnyType) error {
	snapRef, ok := result.(types.ManagedObjectReference)
	if !ok {
		return fmt.Errorf("unexpected task result %T", result)
	}
	snap, ok := simulator.Map.Get(snapRef).(*simulator.VirtualMachineSnapshot)
	if !ok {
		return fmt.Errorf("snapshot %s not found", snapRef.Value)
	}
	vmObj := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	f.lab.mu.Lock()
	vm := f.lab.byRef[vmRef.Value]
	if vm == nil {
		f.lab.mu.Unlock()
		return nil
	}
	ls := &labSnapshot{ref: snapRef.Value, vm: vm, disks: map[int32]*frozenDisk{}}
	for key, d := range vm.disks {
		base := strings.TrimSuffix(d.datastorePath, ".vmdk") + "-" + snapRef.Value
		fd := &frozenDisk{datastorePath: base + ".vmdk", file: strings.TrimSuffix(d.file, "-flat.vmdk") + "-" + snapRef.Value + "-flat.vmdk",
			epoch: d.epoch, seq: d.seq}
		if err := sparseCopy(d.file, fd.file, d.capacity); err != nil {
			f.lab.mu.Unlock()
			return err
		}
		// an empty descriptor next to the data file, as vcsim creates for every disk
		_ = os.WriteFile(strings.TrimSuffix(fd.file, "-flat.vmdk")+".vmdk", nil, 0o644)
		ls.disks[key] = fd
	}
	f.lab.snapshots[snapRef.Value] = ls
	ids := changeIDs(vm)
	f.lab.mu.Unlock()
	simulator.Map.WithLock(snap, func() {
		devices := make([]types.BaseVirtualDevice, len(snap.Config.Hardware.Device))
		for i, dev := range snap.Config.Hardware.Device {
			devices[i] = dev
			disk, ok := dev.(*types.VirtualDisk)
			if !ok {
				continue
			}
			fd := ls.disks[disk.Key]
			if fd == nil {
				continue
			}
			dcopy := *disk
			backing := *disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
			backing.FileName = fd.datastorePath
			backing.ChangeId = ""
			if fd.epoch != "" {
				backing.ChangeId = fd.epoch + "/" + strconv.FormatInt(fd.seq, 10)
			}
			dcopy.Backing = &backing
			devices[i] = &dcopy
		}
		snap.Config.Hardware.Device = devices
	})
	simulator.Map.WithLock(vmObj, func() { syncChangeIDs(vmObj, ids) })
	return nil
}

// changeIDs snapshots each disk's current change ID (caller holds l.mu).
func changeIDs(vm *labVM) map[int32]string {
	ids := map[int32]string{}
	for key, d := range vm.disks {
		ids[key] = d.changeID()
	}
	return ids
}

// syncChangeIDs copies change IDs into the live VM's disk backings. The caller holds the VM's lock
// and not l.mu: the lab never nests its lock with a simulator lock, so they cannot deadlock.
func syncChangeIDs(vmObj *simulator.VirtualMachine, ids map[int32]string) {
	for _, dev := range vmObj.Config.Hardware.Device {
		if disk, ok := dev.(*types.VirtualDisk); ok {
			if id, ok := ids[disk.Key]; ok {
				disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ChangeId = id
			}
		}
	}
}

// sweepSnapshots deletes the frozen copies of snapshots the simulator no longer has.
func (f *front) sweepSnapshots() {
	f.lab.mu.Lock()
	defer f.lab.mu.Unlock()
	for ref, ls := range f.lab.snapshots {
		if simulator.Map.Get(types.ManagedObjectReference{Type: "VirtualMachineSnapshot", Value: ref}) != nil {
			continue
		}
		for _, fd := range ls.disks {
			_ = os.Remove(fd.file)
			_ = os.Remove(strings.TrimSuffix(fd.file, "-flat.vmdk") + ".vmdk")
		}
		delete(f.lab.snapshots, ref)
	}
}

// setCBT turns change tracking on or off; turning it on (or a forced reset) starts a new epoch.
func (f *front) setCBT(vmRef types.ManagedObjectReference, enabled, reset bool) {
	vmObj, ok := simulator.Map.Get(vmRef).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	f.lab.mu.Lock()
	vm := f.lab.byRef[vmRef.Value]
	if vm == nil {
		f.lab.mu.Unlock()
		return
	}
	if enabled && (!vm.cbtEnabled || reset) {
		for _, d := range vm.disks {
			d.newEpoch()
		}
	}
	if !enabled {
		for _, d := range vm.disks {
			d.epoch, d.seq, d.log = "", 0, nil
		}
	}
	vm.cbtEnabled = enabled
	ids := changeIDs(vm)
	f.lab.mu.Unlock()
	simulator.Map.WithLock(vmObj, func() {
		vmObj.Config.ChangeTrackingEnabled = types.NewBool(enabled)
		syncChangeIDs(vmObj, ids)
	})
}
