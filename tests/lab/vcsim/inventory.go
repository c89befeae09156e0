package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path"
	"strings"

	"github.com/google/uuid"
	"github.com/vmware/govmomi/find"
	"github.com/vmware/govmomi/object"
	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/types"
)

type inventory struct {
	Mode           string    `json:"mode"`
	Version        string    `json:"version"`
	LicenseEdition string    `json:"licenseEdition"`
	Hosts          []invHost `json:"hosts"`
	VMs            []invVM   `json:"vms"`
}

type invHost struct {
	Name            string           `json:"name"`
	NicSpeedMb      int32            `json:"nicSpeedMb"`
	NicSpeedsMb     map[string]int32 `json:"nicSpeedsMb"` // per pnic device (vmnic0…), over nicSpeedMb
	License         string           `json:"license"`
	ConnectionState string           `json:"connectionState"`
}

type invVM struct {
	Name            string    `json:"name"`
	Folder          string    `json:"folder"`
	Host            string    `json:"host"`
	InstanceUUID    string    `json:"instanceUuid"`
	UUID            string    `json:"uuid"`
	HardwareVersion int       `json:"hardwareVersion"`
	PowerState      string    `json:"powerState"`
	Tools           string    `json:"tools"`
	Encrypted       bool      `json:"encrypted"`
	Tags            []string  `json:"tags"`
	CBT             bool      `json:"cbt"`
	Disks           []invDisk `json:"disks"`
}

type invDisk struct {
	Key      int32  `json:"key"`
	Capacity int64  `json:"capacity"`
	Image    string `json:"image"`
}

func loadInventory(file string) (*inventory, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	inv := &inventory{}
	if err := json.Unmarshal(data, inv); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	if inv.Mode != "vcenter" && inv.Mode != "esxi" {
		return nil, fmt.Errorf("%s: mode must be vcenter or esxi, got %q", file, inv.Mode)
	}
	if len(inv.Hosts) == 0 {
		return nil, fmt.Errorf("%s: at least one host is required", file)
	}
	if inv.Mode == "esxi" && len(inv.Hosts) != 1 {
		return nil, fmt.Errorf("%s: esxi mode has exactly one host", file)
	}
	seen := map[string]bool{}
	for i := range inv.VMs {
		vm := &inv.VMs[i]
		if vm.Name == "" || seen[vm.Name] {
			return nil, fmt.Errorf("%s: vm #%d: missing or duplicate name %q", file, i, vm.Name)
		}
		seen[vm.Name] = true
		if vm.Host == "" {
			vm.Host = inv.Hosts[i%len(inv.Hosts)].Name
		}
		if vm.HardwareVersion == 0 {
			vm.HardwareVersion = 14
		}
		if vm.PowerState == "" {
			vm.PowerState = "poweredOn"
		}
		if vm.Tools == "" {
			vm.Tools = "toolsOk"
		}
		for j, d := range vm.Disks {
			if d.Key == 0 {
				vm.Disks[j].Key = int32(2000 + j)
			}
			if d.Capacity <= 0 || d.Capacity%1024 != 0 {
				return nil, fmt.Errorf("%s: vm %s disk #%d: capacity must be a positive multiple of 1024", file, vm.Name, j)
			}
		}
	}
	return inv, nil
}

// builder creates the inventory's objects through an in-process vim25 client (no HTTP involved),
// then adjusts what the API cannot set (tools status, encryption key, NIC speed) in the registry.
type builder struct {
	ctx     context.Context
	c       *vim25.Client
	inv     *inventory
	lab     *lab
	dc      *object.Datacenter
	folders *object.DatacenterFolders
	dsName  string
	dsURL   string
	vmDirs  map[string]*object.Folder
	tagKey  int32
}

func buildInventory(m *simulator.Model, inv *inventory, l *lab) error {
	ctx := context.Background()
	c, err := vim25.NewClient(ctx, m.Service)
	if err != nil {
		return err
	}
	b := &builder{ctx: ctx, c: c, inv: inv, lab: l, vmDirs: map[string]*object.Folder{}}
	finder := find.NewFinder(c, false)
	if b.dc, err = finder.DefaultDatacenter(ctx); err != nil {
		return err
	}
	l.datacenter = b.dc.Name()
	finder.SetDatacenter(b.dc)
	if b.folders, err = b.dc.Folders(ctx); err != nil {
		return err
	}
	ds, err := finder.DefaultDatastore(ctx)
	if err != nil {
		return err
	}
	b.dsName = ds.Name()
	b.dsURL = simulator.Map.Get(ds.Reference()).(*simulator.Datastore).Info.GetDatastoreInfo().Url
	l.datastore = b.dsName
	l.datastoreDir = b.dsURL
	b.setAboutAndLicense()
	if err := b.setupHosts(finder); err != nil {
		return err
	}
	// hostd has no CustomFieldsManager: a standalone host's tags are only in the control endpoint
	if inv.Mode == "vcenter" {
		if err := b.setupTagField(); err != nil {
			return err
		}
	}
	for i := range inv.VMs {
		if err := b.createVM(finder, &inv.VMs[i]); err != nil {
			return fmt.Errorf("vm %s: %w", inv.VMs[i].Name, err)
		}
	}
	return nil
}

func (b *builder) setAboutAndLicense() {
	si := simulator.Map.Get(vim25.ServiceInstance).(*simulator.ServiceInstance)
	if b.inv.Version != "" {
		si.Content.About.Version = b.inv.Version
		si.Content.About.ApiVersion = b.inv.Version + ".0"
		si.Content.About.FullName = fmt.Sprintf("%s %s build-lab", si.Content.About.Name, b.inv.Version)
	}
	edition := b.inv.LicenseEdition
	if edition == "" {
		edition = "evaluation"
	}
	site := labLicense(edition)
	b.lab.siteLicense = site
	b.lab.vcenter = b.inv.Mode == "vcenter"
	b.lab.instanceUUID = si.Content.About.InstanceUuid
	lm := simulator.Map.Get(*si.Content.LicenseManager).(*simulator.LicenseManager)
	lm.Licenses = []types.LicenseManagerLicenseInfo{site}
}

func (b *builder) setupHosts(finder *find.Finder) error {
	hosts, err := finder.HostSystemList(b.ctx, "*")
	if err != nil {
		return err
	}
	if len(hosts) < len(b.inv.Hosts) {
		return fmt.Errorf("model has %d hosts, inventory wants %d", len(hosts), len(b.inv.Hosts))
	}
	for i, spec := range b.inv.Hosts {
		h := simulator.Map.Get(hosts[i].Reference()).(*simulator.HostSystem)
		simulator.Map.WithLock(h, func() {
			h.Name = spec.Name
			h.Summary.Config.Name = spec.Name
			if spec.ConnectionState != "" {
				h.Runtime.ConnectionState = types.HostSystemConnectionState(spec.ConnectionState)
			}
			if (spec.NicSpeedMb > 0 || len(spec.NicSpeedsMb) > 0) && h.Config != nil && h.Config.Network != nil {
				network := *h.Config.Network
				pnics := make([]types.PhysicalNic, len(network.Pnic))
				copy(pnics, network.Pnic)
				for j := range pnics {
					speed, ok := spec.NicSpeedsMb[pnics[j].Device]
					if !ok {
						speed = spec.NicSpeedMb
					}
					if speed > 0 {
						pnics[j].LinkSpeed = &types.PhysicalNicLinkInfo{SpeedMb: speed, Duplex: true}
					} else if ok { // an explicit 0: the link is down, as vSphere reports it (no linkSpeed)
						pnics[j].LinkSpeed = nil
					}
				}
				network.Pnic = pnics
				h.Config.Network = &network
			}
		})
		b.lab.hosts[spec.Name] = h.Self
		b.lab.hostNames[h.Self.Value] = spec.Name
		if spec.License != "" && b.inv.Mode == "vcenter" {
			b.lab.hostLicenses[h.Self.Value] = labLicense(spec.License)
		}
	}
	return nil
}

func (b *builder) setupTagField() error {
	cfm, err := object.GetCustomFieldsManager(b.c)
	if err != nil {
		return err
	}
	def, err := cfm.Add(b.ctx, "tags", "VirtualMachine", nil, nil)
	if err != nil {
		return err
	}
	b.tagKey = def.Key
	return nil
}

// vmFolder returns (creating as needed) the folder at a "a/b/c" path under the vm folder.
func (b *builder) vmFolder(p string) (*object.Folder, error) {
	p = strings.Trim(p, "/")
	if p == "" || p == "." {
		return b.folders.VmFolder, nil
	}
	if f, ok := b.vmDirs[p]; ok {
		return f, nil
	}
	parent, err := b.vmFolder(path.Dir(p))
	if err != nil {
		return nil, err
	}
	f, err := parent.CreateFolder(b.ctx, path.Base(p))
	if err != nil {
		return nil, err
	}
	b.vmDirs[p] = f
	return f, nil
}

func (b *builder) createVM(finder *find.Finder, spec *invVM) error {
	hostRef, ok := b.lab.hosts[spec.Host]
	if !ok {
		return fmt.Errorf("unknown host %q", spec.Host)
	}
	host := object.NewHostSystem(b.c, hostRef)
	pool, err := host.ResourcePool(b.ctx)
	if err != nil {
		return err
	}
	folder, err := b.vmFolder(spec.Folder)
	if err != nil {
		return err
	}
	config := types.VirtualMachineConfigSpec{
		Name:         spec.Name,
		GuestId:      string(types.VirtualMachineGuestOsIdentifierOtherGuest),
		Files:        &types.VirtualMachineFileInfo{VmPathName: "[" + b.dsName + "]"},
		Uuid:         spec.UUID,
		InstanceUuid: spec.InstanceUUID,
		Version:      fmt.Sprintf("vmx-%02d", spec.HardwareVersion),
		NumCPUs:      1,
		MemoryMB:     256,
	}
	var devices object.VirtualDeviceList
	scsi, err := devices.CreateSCSIController("pvscsi")
	if err != nil {
		return err
	}
	devices = append(devices, scsi)
	for _, d := range spec.Disks {
		disk := devices.CreateDisk(scsi.(types.BaseVirtualController), types.ManagedObjectReference{}, "")
		disk.Key = d.Key
		disk.CapacityInKB = d.Capacity / 1024
		disk.CapacityInBytes = d.Capacity
		disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo).ThinProvisioned = types.NewBool(true)
		devices = append(devices, disk)
	}
	if config.DeviceChange, err = devices.ConfigSpec(types.VirtualDeviceConfigSpecOperationAdd); err != nil {
		return err
	}
	task, err := folder.CreateVM(b.ctx, config, pool, host)
	if err != nil {
		return err
	}
	info, err := task.WaitForResult(b.ctx, nil)
	if err != nil {
		return err
	}
	ref := info.Result.(types.ManagedObjectReference)
	if spec.PowerState == "poweredOn" {
		task, err := object.NewVirtualMachine(b.c, ref).PowerOn(b.ctx)
		if err != nil {
			return err
		}
		if err := task.Wait(b.ctx); err != nil {
			return err
		}
	}
	vm := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	lvm := &labVM{name: spec.Name, ref: ref, host: spec.Host, hwVersion: spec.HardwareVersion,
		instanceUUID: vm.Config.InstanceUuid, tags: spec.Tags, disks: map[int32]*labDisk{}}
	var setupErr error
	simulator.Map.WithLock(vm, func() { setupErr = b.finishVM(vm, spec, lvm) })
	if setupErr != nil {
		return setupErr
	}
	if len(spec.Tags) > 0 && b.inv.Mode == "vcenter" {
		cfm, _ := object.GetCustomFieldsManager(b.c)
		if err := cfm.Set(b.ctx, ref, b.tagKey, strings.Join(spec.Tags, ",")); err != nil {
			return err
		}
	}
	b.lab.addVM(lvm)
	return nil
}

// finishVM sets what CreateVM cannot and prepares each disk's flat file. Called with the VM's lock.
func (b *builder) finishVM(vm *simulator.VirtualMachine, spec *invVM, lvm *labVM) error {
	toolsRunning := map[string]string{
		"toolsOk": "guestToolsRunning", "toolsNotRunning": "guestToolsNotRunning",
		"toolsNotInstalled": "guestToolsNotRunning",
	}
	vm.Guest.ToolsStatus = types.VirtualMachineToolsStatus(spec.Tools)
	vm.Guest.ToolsRunningStatus = toolsRunning[spec.Tools]
	if spec.Tools == "toolsNotInstalled" {
		vm.Guest.ToolsVersionStatus2 = string(types.VirtualMachineToolsVersionStatusGuestToolsNotInstalled)
	}
	if spec.PowerState != "poweredOn" {
		vm.Guest.ToolsRunningStatus = "guestToolsNotRunning"
	}
	if spec.Encrypted {
		vm.Config.KeyId = &types.CryptoKeyId{KeyId: uuid.New().String(), ProviderId: &types.KeyProviderId{Id: "lab-kms"}}
	}
	vm.Config.ChangeTrackingEnabled = types.NewBool(spec.CBT)
	lvm.cbtEnabled = spec.CBT
	for _, dev := range vm.Config.Hardware.Device {
		disk, ok := dev.(*types.VirtualDisk)
		if !ok {
			continue
		}
		var want *invDisk
		for i := range spec.Disks {
			if spec.Disks[i].Key == disk.Key {
				want = &spec.Disks[i]
			}
		}
		if want == nil {
			return fmt.Errorf("disk key %d was renumbered by the simulator", disk.Key)
		}
		backing := disk.Backing.(*types.VirtualDiskFlatVer2BackingInfo)
		file := b.flatPath(backing.FileName)
		if want.Image != "" {
			if err := sparseCopy(want.Image, file, want.Capacity); err != nil {
				return fmt.Errorf("disk %d image: %w", disk.Key, err)
			}
		} else if err := os.Truncate(file, want.Capacity); err != nil {
			return err
		}
		d := &labDisk{key: disk.Key, capacity: want.Capacity, datastorePath: backing.FileName, file: file}
		if spec.CBT {
			d.newEpoch()
			backing.ChangeId = d.changeID()
		}
		lvm.disks[disk.Key] = d
		lvm.diskOrder = append(lvm.diskOrder, disk.Key)
	}
	return nil
}

// flatPath maps "[ds] dir/name.vmdk" to the absolute path of its "-flat.vmdk" data file.
func (b *builder) flatPath(dsPath string) string {
	var p object.DatastorePath
	p.FromString(dsPath)
	return path.Join(b.dsURL, strings.TrimSuffix(p.Path, ".vmdk")+"-flat.vmdk")
}
