package main

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// setConsolidationNeeded answers PUT /vms/{vm}/consolidation-needed {"value": bool}: vSphere sets
// runtime.consolidationNeeded when a snapshot removal left delta disks behind; the lab sets it on demand.
func (c *control) setConsolidationNeeded(w http.ResponseWriter, r *http.Request, vmName string) {
	var req struct {
		Value *bool `json:"value"`
	}
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Value == nil {
		msg := "body must be JSON {\"value\": true|false}"
		if err != nil {
			msg += ": " + err.Error()
		}
		replyError(w, http.StatusBadRequest, msg)
		return
	}
	l := c.front.lab
	l.mu.Lock()
	vm := l.vms[vmName]
	l.mu.Unlock()
	if vm == nil {
		replyError(w, http.StatusNotFound, fmt.Sprintf("no VM named %q", vmName))
		return
	}
	vmObj, ok := simulator.Map.Get(vm.ref).(*simulator.VirtualMachine)
	if !ok {
		replyError(w, http.StatusNotFound, fmt.Sprintf("VM %q is no longer in the inventory", vmName))
		return
	}
	setConsolidationNeeded(vmObj, *req.Value)
	reply(w, http.StatusOK, map[string]interface{}{"vm": vmName, "consolidationNeeded": *req.Value})
}

// setConsolidationNeeded goes through Map.Update so that waiting PropertyCollectors see the change.
func setConsolidationNeeded(vmObj *simulator.VirtualMachine, value bool) {
	simulator.Map.Update(vmObj, []types.PropertyChange{{Name: "runtime.consolidationNeeded", Val: value}})
}

// consolidateVMDisks answers ConsolidateVMDisks_Task, which vcsim 0.24 lacks: a task that clears
// runtime.consolidationNeeded, or ends in the fault vSphere reports when a delta disk stays locked.
func (f *front) consolidateVMDisks(w http.ResponseWriter, req *types.ConsolidateVMDisks_Task) {
	vmObj, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		writeFault(w, "The object has already been deleted or has not been completely created",
			&types.ManagedObjectNotFound{Obj: req.This})
		return
	}
	f.lab.mu.Lock()
	name := ""
	if vm := f.lab.byRef[req.This.Value]; vm != nil {
		name = vm.name
	}
	var fault types.BaseMethodFault
	msg := ""
	switch {
	case f.hostDisconnected(vmObj):
		fault, msg = &types.HostNotConnected{}, "The operation is not allowed in the current connection state of the host."
	case f.lab.fire("consolidate-fails", name) != nil:
		fault = &types.GenericVmConfigFault{Reason: "msg.snapshot.vigor.consolidate.error"}
		msg = "An error occurred while consolidating disks: Failed to lock the file (lab fault)."
	}
	hang := f.lab.fire("task-hangs", name)
	f.lab.mu.Unlock()
	var ref types.ManagedObjectReference
	if fault != nil {
		ref = failedTask(vmObj, "consolidateVMDisks", fault, msg)
	} else {
		task := simulator.CreateTask(vmObj, "consolidateVMDisks", func(*simulator.Task) (types.AnyType, types.BaseMethodFault) {
			setConsolidationNeeded(vmObj, false)
			return nil, nil
		})
		ref = task.Run()
	}
	task := simulator.Map.Get(ref).(*simulator.Task)
	setTaskEntity(task, vmObj)
	if hang != nil {
		f.holdRunning(task, hang)
	}
	writeResponse(w, "ConsolidateVMDisks_TaskResponse", &types.ConsolidateVMDisks_TaskResponse{Returnval: ref})
}
