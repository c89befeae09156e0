package main

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// queryChangedDiskAreas answers VirtualMachine.QueryChangedDiskAreas, which stock vcsim lacks.
func (f *front) queryChangedDiskAreas(w http.ResponseWriter, req *types.QueryChangedDiskAreas) {
	info, msg, fault := f.changedAreas(req)
	if fault != nil {
		writeFault(w, msg, fault)
		return
	}
	writeResponse(w, "QueryChangedDiskAreasResponse", &types.QueryChangedDiskAreasResponse{Returnval: *info})
}

func (f *front) changedAreas(req *types.QueryChangedDiskAreas) (*types.DiskChangeInfo, string, types.BaseMethodFault) {
	vmObj, ok := simulator.Map.Get(req.This).(*simulator.VirtualMachine)
	if !ok {
		return nil, "The object has already been deleted or has not been completely created",
			&types.ManagedObjectNotFound{Obj: req.This}
	}
	f.lab.mu.Lock()
	defer f.lab.mu.Unlock()
	vm := f.lab.byRef[req.This.Value]
	if vm == nil {
		return nil, "The operation is not supported on the object.", &types.NotSupported{}
	}
	d := vm.disks[req.DeviceKey]
	if d == nil {
		return nil, "A specified parameter was not correct: deviceKey", &types.InvalidArgument{InvalidProperty: "deviceKey"}
	}
	// vSphere reports a disk without usable change tracking as a file fault on the disk.
	fileFault := func() (*types.DiskChangeInfo, string, types.BaseMethodFault) {
		return nil, "Error caused by file " + d.datastorePath, &types.FileFault{File: d.datastorePath}
	}
	if vm.hwVersion < 7 || vmObj.Config.ChangeTrackingEnabled == nil || !*vmObj.Config.ChangeTrackingEnabled || d.epoch == "" {
		return fileFault()
	}
	file, epoch, upto := d.file, d.epoch, d.seq
	if req.Snapshot != nil {
		ls := f.lab.snapshots[req.Snapshot.Value]
		if ls == nil || ls.vm != vm {
			return nil, "The object has already been deleted or has not been completely created",
				&types.ManagedObjectNotFound{Obj: *req.Snapshot}
		}
		fd := ls.disks[req.DeviceKey]
		file, epoch, upto = fd.file, fd.epoch, fd.seq
	}
	if req.StartOffset < 0 || req.StartOffset >= d.capacity {
		return nil, "A specified parameter was not correct: startOffset", &types.InvalidArgument{InvalidProperty: "startOffset"}
	}
	end := req.StartOffset + maxAnswer
	if end > d.capacity {
		end = d.capacity
	}
	var areas []extent
	if req.ChangeId == "*" {
		allocated, err := dataExtents(file)
		if err != nil {
			return nil, "Error caused by file " + d.datastorePath, &types.FileFault{File: d.datastorePath}
		}
		areas = alignExtents(allocated, d.capacity)
	} else {
		since, ok := parseChangeID(req.ChangeId, epoch)
		if epoch != d.epoch {
			return fileFault() // CBT was reset since the snapshot was taken
		}
		if !ok || since > upto {
			return fileFault()
		}
		areas = d.changedSince(since, upto)
	}
	info := &types.DiskChangeInfo{StartOffset: req.StartOffset, Length: end - req.StartOffset}
	for _, a := range clip(areas, req.StartOffset, end) {
		info.ChangedArea = append(info.ChangedArea, types.DiskChangeExtent{Start: a.Start, Length: a.Length})
	}
	return info, "", nil
}

// parseChangeID returns the sequence of "<epoch>/<seq>" when epoch matches the disk's current one.
func parseChangeID(id, epoch string) (int64, bool) {
	i := strings.LastIndex(id, "/")
	if i < 0 || id[:i] != epoch {
		return 0, false
	}
	seq, err := strconv.ParseInt(id[i+1:], 10, 64)
	return seq, err == nil && seq >= 0
}
