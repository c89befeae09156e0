package main

import (
	"fmt"
	"math/rand"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/vim25/types"
)

// cbtBlock is the granularity of changed-block tracking: every reported area starts and ends on a
// multiple of it, as vSphere reports whole CBT blocks (64 KiB is a common vSphere block size).
const cbtBlock int64 = 64 * 1024

// maxAnswer caps the address range one QueryChangedDiskAreas answer covers, so clients must loop on
// startOffset as they must against vSphere.
const maxAnswer int64 = 1 << 30

type lab struct {
	mu           sync.Mutex
	vms          map[string]*labVM
	order        []string
	byRef        map[string]*labVM
	hosts        map[string]types.ManagedObjectReference
	snapshots    map[string]*labSnapshot
	faults       map[string]*faultSpec
	hungTasks    chan struct{} // closed (and replaced) when task-hangs is cleared: hung tasks finish
	datacenter   string
	datastore    string
	datastoreDir string
	// licences as QueryAssignedLicenses reports them (vcsim answers "eval" for every entity)
	vcenter      bool
	siteLicense  types.LicenseManagerLicenseInfo
	instanceUUID string
	hostLicenses map[string]types.LicenseManagerLicenseInfo // host MoRef value → its own licence
	hostNames    map[string]string                          // host MoRef value → inventory name
}

type labVM struct {
	name         string
	ref          types.ManagedObjectReference
	host         string
	hwVersion    int
	instanceUUID string
	tags         []string
	cbtEnabled   bool
	disks        map[int32]*labDisk
	diskOrder    []int32
}

type labDisk struct {
	key           int32
	capacity      int64
	datastorePath string
	file          string
	epoch         string // "" when CBT is off
	seq           int64
	log           []write
}

// write is one recorded change: block-aligned [start, end) written at sequence seq.
type write struct {
	seq, start, end int64
}

type labSnapshot struct {
	ref   string
	vm    *labVM
	disks map[int32]*frozenDisk
}

type frozenDisk struct {
	datastorePath string
	file          string
	epoch         string
	seq           int64
}

func newLab() *lab {
	return &lab{
		vms: map[string]*labVM{}, byRef: map[string]*labVM{}, hosts: map[string]types.ManagedObjectReference{},
		hostLicenses: map[string]types.LicenseManagerLicenseInfo{}, hostNames: map[string]string{},
		snapshots: map[string]*labSnapshot{}, faults: map[string]*faultSpec{}, hungTasks: make(chan struct{}),
	}
}

func (l *lab) addVM(vm *labVM) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.vms[vm.name] = vm
	l.byRef[vm.ref.Value] = vm
	l.order = append(l.order, vm.name)
}

// newEpoch starts a new CBT epoch: earlier change IDs become invalid, as after a CBT reset.
func (d *labDisk) newEpoch() {
	u := strings.ReplaceAll(uuid.New().String(), "-", "")
	var parts []string
	for i := 0; i < 32; i += 2 {
		parts = append(parts, u[i:i+2])
	}
	// vSphere's form: "52 9b 0e ... 4f-1c 3d .../N"
	d.epoch = strings.Join(parts[:8], " ") + "-" + strings.Join(parts[8:], " ")
	d.seq = 0
	d.log = nil
}

func (d *labDisk) changeID() string {
	if d.epoch == "" {
		return ""
	}
	return d.epoch + "/" + strconv.FormatInt(d.seq, 10)
}

func alignDown(v int64) int64 { return v / cbtBlock * cbtBlock }
func alignUp(v int64) int64   { return (v + cbtBlock - 1) / cbtBlock * cbtBlock }

// writeDisk writes data at offset into the live flat file and records it for CBT.
func (l *lab) writeDisk(vm *labVM, d *labDisk, offset int64, data []byte) error {
	if offset < 0 || offset+int64(len(data)) > d.capacity {
		return fmt.Errorf("write [%d, %d) is outside the disk (capacity %d)", offset, offset+int64(len(data)), d.capacity)
	}
	f, err := os.OpenFile(d.file, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.WriteAt(data, offset); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return err
	}
	if d.epoch != "" && len(data) > 0 {
		d.seq++
		d.log = append(d.log, write{d.seq, alignDown(offset), alignUp(offset + int64(len(data)))})
	}
	return nil
}

// patternBytes builds length bytes of a named pattern (seeded random, or zeros).
func patternBytes(pattern string, length int64, seed int64) ([]byte, error) {
	if length < 0 || length > 1<<30 {
		return nil, fmt.Errorf("length must be between 0 and 1 GiB")
	}
	buf := make([]byte, length)
	switch pattern {
	case "zero":
	case "random":
		rand.New(rand.NewSource(seed)).Read(buf)
	default:
		return nil, fmt.Errorf("pattern must be random or zero, got %q", pattern)
	}
	return buf, nil
}

// changedSince merges the areas written after sequence since, up to and including upto.
func (d *labDisk) changedSince(since, upto int64) []extent {
	var areas []extent
	for _, w := range d.log {
		if w.seq > since && w.seq <= upto {
			areas = append(areas, extent{w.start, w.end - w.start})
		}
	}
	return mergeExtents(areas)
}

func mergeExtents(in []extent) []extent {
	sort.Slice(in, func(i, j int) bool { return in[i].Start < in[j].Start })
	var out []extent
	for _, e := range in {
		if n := len(out); n > 0 && e.Start <= out[n-1].Start+out[n-1].Length {
			if end := e.Start + e.Length; end > out[n-1].Start+out[n-1].Length {
				out[n-1].Length = end - out[n-1].Start
			}
			continue
		}
		out = append(out, e)
	}
	return out
}

// clip keeps the parts of areas inside [lo, hi).
func clip(areas []extent, lo, hi int64) []extent {
	var out []extent
	for _, a := range areas {
		s, e := a.Start, a.Start+a.Length
		if s < lo {
			s = lo
		}
		if e > hi {
			e = hi
		}
		if s < e {
			out = append(out, extent{s, e - s})
		}
	}
	return out
}

func alignExtents(in []extent, capacity int64) []extent {
	out := make([]extent, 0, len(in))
	for _, e := range in {
		s, end := alignDown(e.Start), alignUp(e.Start+e.Length)
		if end > capacity {
			end = capacity
		}
		out = append(out, extent{s, end - s})
	}
	return mergeExtents(out)
}

// faultSpec is an armed fault switch.
type faultSpec struct {
	Name       string   `json:"name"`
	VM         string   `json:"vm,omitempty"`
	Count      *int     `json:"count,omitempty"`
	Seconds    *float64 `json:"seconds,omitempty"`
	AfterBytes *int64   `json:"afterBytes,omitempty"`
	Fired      int      `json:"fired"`
}

var knownFaults = map[string]bool{
	"quiesce-fails": true, "snapshot-create-fails": true, "snapshot-remove-fails": true,
	"session-expires": true, "task-hangs": true, "disk-read-error": true, "host-disconnected": true,
	"consolidate-fails": true,
}

// fire reports whether fault name applies to vmName (any VM when the switch names none) and, if
// so, consumes one of its counted firings. Caller holds l.mu.
func (l *lab) fire(name, vmName string) *faultSpec {
	f, ok := l.faults[name]
	if !ok || (f.VM != "" && vmName != "" && f.VM != vmName) || (f.VM != "" && vmName == "" && name != "session-expires") {
		return nil
	}
	f.Fired++
	if f.Count != nil {
		*f.Count--
		if *f.Count <= 0 {
			delete(l.faults, name)
		}
	}
	copy := *f
	return &copy
}
