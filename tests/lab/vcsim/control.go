package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// control is the lab's JSON endpoint: write disk bytes, reset CBT, arm and disarm faults.
type control struct {
	front *front
}

type diskJSON struct {
	Key           int32  `json:"key"`
	DatastorePath string `json:"datastorePath"`
	File          string `json:"file"`
	URL           string `json:"url"`
	Capacity      int64  `json:"capacity"`
	ChangeID      string `json:"changeId,omitempty"`
}

type vmJSON struct {
	Name         string     `json:"name"`
	Moref        string     `json:"moref"`
	InstanceUUID string     `json:"instanceUuid"`
	Host         string     `json:"host"`
	Tags         []string   `json:"tags"`
	CBTEnabled   bool       `json:"cbtEnabled"`
	Disks        []diskJSON `json:"disks"`
}

// vmList describes every VM (caller holds l.mu).
func (l *lab) vmList() []vmJSON {
	out := make([]vmJSON, 0, len(l.order))
	for _, name := range l.order {
		vm := l.vms[name]
		j := vmJSON{Name: vm.name, Moref: vm.ref.Value, InstanceUUID: vm.instanceUUID, Host: vm.host,
			Tags: vm.tags, CBTEnabled: vm.cbtEnabled, Disks: []diskJSON{}}
		if j.Tags == nil {
			j.Tags = []string{}
		}
		for _, key := range vm.diskOrder {
			d := vm.disks[key]
			j.Disks = append(j.Disks, diskJSON{Key: d.key, DatastorePath: d.datastorePath, File: d.file,
				URL: l.folderURL(d.datastorePath), Capacity: d.capacity, ChangeID: d.changeID()})
		}
		out = append(out, j)
	}
	return out
}

// folderURL is the path (relative to the SDK's host) serving a disk's flat file.
func (l *lab) folderURL(dsPath string) string {
	p := dsPath
	if i := strings.Index(p, "] "); i >= 0 {
		p = p[i+2:]
	}
	p = strings.TrimSuffix(p, ".vmdk") + "-flat.vmdk"
	q := url.Values{"dcPath": {l.datacenter}, "dsName": {l.datastore}}
	return "/folder/" + p + "?" + q.Encode()
}

func (c *control) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	l := c.front.lab
	switch {
	case r.Method == http.MethodGet && r.URL.Path == "/vms":
		l.mu.Lock()
		list := l.vmList()
		l.mu.Unlock()
		reply(w, http.StatusOK, list)
	case r.Method == http.MethodPost && len(parts) == 5 && parts[0] == "vms" && parts[2] == "disks" && parts[4] == "write":
		c.write(w, r, parts[1], parts[3])
	case r.Method == http.MethodPost && len(parts) == 4 && parts[0] == "vms" && parts[2] == "cbt" && parts[3] == "reset":
		c.resetCBT(w, parts[1])
	case r.Method == http.MethodPut && len(parts) == 3 && parts[0] == "vms" && parts[2] == "consolidation-needed":
		c.setConsolidationNeeded(w, r, parts[1])
	case r.Method == http.MethodGet && r.URL.Path == "/faults":
		l.mu.Lock()
		list := make([]faultSpec, 0, len(l.faults))
		for _, f := range l.faults {
			list = append(list, *f)
		}
		l.mu.Unlock()
		sort.Slice(list, func(i, j int) bool { return list[i].Name < list[j].Name })
		reply(w, http.StatusOK, list)
	case len(parts) == 2 && parts[0] == "faults" && (r.Method == http.MethodPut || r.Method == http.MethodDelete):
		c.fault(w, r, parts[1])
	default:
		replyError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	}
}

func reply(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func replyError(w http.ResponseWriter, status int, msg string) {
	reply(w, status, map[string]string{"error": msg})
}

type writeRequest struct {
	Offset  *int64  `json:"offset"`
	Data    *string `json:"data"`
	Length  *int64  `json:"length"`
	Pattern string  `json:"pattern"`
	Seed    int64   `json:"seed"`
}

func (c *control) write(w http.ResponseWriter, r *http.Request, vmName, keyText string) {
	var req writeRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		replyError(w, http.StatusBadRequest, "body must be JSON {offset, data} or {offset, length, pattern, seed}: "+err.Error())
		return
	}
	if req.Offset == nil {
		replyError(w, http.StatusBadRequest, "offset is required")
		return
	}
	var data []byte
	var err error
	switch {
	case req.Data != nil && req.Length == nil:
		if data, err = base64.StdEncoding.DecodeString(*req.Data); err != nil {
			replyError(w, http.StatusBadRequest, "data must be base64: "+err.Error())
			return
		}
	case req.Data == nil && req.Length != nil:
		if data, err = patternBytes(req.Pattern, *req.Length, req.Seed); err != nil {
			replyError(w, http.StatusBadRequest, err.Error())
			return
		}
	default:
		replyError(w, http.StatusBadRequest, "give either data or length+pattern")
		return
	}
	l := c.front.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	vm, d, msg := l.findDisk(vmName, keyText)
	if msg != "" {
		replyError(w, http.StatusNotFound, msg)
		return
	}
	if err := l.writeDisk(vm, d, *req.Offset, data); err != nil {
		replyError(w, http.StatusBadRequest, err.Error())
		return
	}
	reply(w, http.StatusOK, map[string]interface{}{"written": len(data), "changeId": d.changeID()})
}

func (l *lab) findDisk(vmName, keyText string) (*labVM, *labDisk, string) {
	vm := l.vms[vmName]
	if vm == nil {
		return nil, nil, fmt.Sprintf("no VM named %q", vmName)
	}
	key, err := strconv.Atoi(keyText)
	if err != nil || vm.disks[int32(key)] == nil {
		return nil, nil, fmt.Sprintf("VM %s has no disk with key %s", vmName, keyText)
	}
	return vm, vm.disks[int32(key)], ""
}

func (c *control) resetCBT(w http.ResponseWriter, vmName string) {
	l := c.front.lab
	l.mu.Lock()
	vm := l.vms[vmName]
	l.mu.Unlock()
	if vm == nil {
		replyError(w, http.StatusNotFound, fmt.Sprintf("no VM named %q", vmName))
		return
	}
	c.front.setCBT(vm.ref, true, true)
	l.mu.Lock()
	defer l.mu.Unlock()
	reply(w, http.StatusOK, l.vmList()[indexOf(l.order, vmName)])
}

func indexOf(list []string, s string) int {
	for i, v := range list {
		if v == s {
			return i
		}
	}
	return -1
}

func (c *control) fault(w http.ResponseWriter, r *http.Request, name string) {
	if !knownFaults[name] {
		names := make([]string, 0, len(knownFaults))
		for n := range knownFaults {
			names = append(names, n)
		}
		sort.Strings(names)
		replyError(w, http.StatusNotFound, fmt.Sprintf("unknown fault %q (known: %s)", name, strings.Join(names, ", ")))
		return
	}
	l := c.front.lab
	if r.Method == http.MethodDelete {
		l.mu.Lock()
		old := l.faults[name]
		delete(l.faults, name)
		if name == "task-hangs" {
			close(l.hungTasks)
			l.hungTasks = make(chan struct{})
		}
		l.mu.Unlock()
		if name == "host-disconnected" && old != nil {
			c.setHostState(old.VM, types.HostSystemConnectionStateConnected)
		}
		reply(w, http.StatusOK, map[string]string{"cleared": name})
		return
	}
	spec := faultSpec{Name: name}
	if r.ContentLength != 0 {
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields()
		if err := dec.Decode(&spec); err != nil && err.Error() != "EOF" {
			replyError(w, http.StatusBadRequest, "body must be JSON {vm, count, seconds, afterBytes}: "+err.Error())
			return
		}
	}
	spec.Name, spec.Fired = name, 0
	if name == "session-expires" && spec.Count == nil {
		once := 1 // "the next call": a switch that stayed armed would refuse every later login too
		spec.Count = &once
	}
	if spec.Count != nil && *spec.Count <= 0 {
		replyError(w, http.StatusBadRequest, "count must be positive")
		return
	}
	l.mu.Lock()
	if spec.VM != "" && l.vms[spec.VM] == nil {
		l.mu.Unlock()
		replyError(w, http.StatusNotFound, fmt.Sprintf("no VM named %q", spec.VM))
		return
	}
	l.faults[name] = &spec
	l.mu.Unlock()
	if name == "host-disconnected" {
		c.setHostState(spec.VM, types.HostSystemConnectionStateDisconnected)
	}
	reply(w, http.StatusOK, spec)
}

// setHostState sets runtime.connectionState on the VM's host (every host when vmName is empty)
// and on the VMs it runs.
func (c *control) setHostState(vmName string, state types.HostSystemConnectionState) {
	l := c.front.lab
	l.mu.Lock()
	hosts := map[string]bool{}
	for name := range l.hosts {
		if vmName == "" || l.vms[vmName].host == name {
			hosts[name] = true
		}
	}
	var vmRefs []types.ManagedObjectReference
	for _, vm := range l.vms {
		if hosts[vm.host] {
			vmRefs = append(vmRefs, vm.ref)
		}
	}
	hostRefs := []types.ManagedObjectReference{}
	for name := range hosts {
		hostRefs = append(hostRefs, l.hosts[name])
	}
	l.mu.Unlock()
	vmState := types.VirtualMachineConnectionStateConnected
	if state != types.HostSystemConnectionStateConnected {
		vmState = types.VirtualMachineConnectionStateDisconnected
	}
	for _, ref := range hostRefs {
		h := simulator.Map.Get(ref).(*simulator.HostSystem)
		simulator.Map.Update(h, []types.PropertyChange{{Name: "runtime.connectionState", Val: state}})
	}
	for _, ref := range vmRefs {
		vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
		simulator.Map.Update(vm, []types.PropertyChange{{Name: "runtime.connectionState", Val: vmState}})
	}
}
