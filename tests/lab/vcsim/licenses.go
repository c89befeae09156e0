package main

import (
	"fmt"
	"net/http"
	"sort"

	"github.com/vmware/govmomi/vim25/types"
)

// defaultHostLicense is what a vCenter host without its own `license` in the inventory is assigned:
// a paid ESXi edition, as on a real vCenter, where hosts carry ESXi licences and not the vCenter's.
const defaultHostLicense = "esx-enterprise-plus"

var licenseNames = map[string]string{
	"vcenter-standard":    "VMware vCenter Server 7 Standard",
	"esxi-free":           "VMware vSphere 7 Hypervisor",
	"esx-enterprise-plus": "VMware vSphere 7 Enterprise Plus",
	"evaluation":          "Evaluation Mode",
}

// labLicense is a LicenseManagerLicenseInfo for an edition key: a readable name, a key shaped like a real one.
func labLicense(edition string) types.LicenseManagerLicenseInfo {
	name, ok := licenseNames[edition]
	if !ok {
		name = edition
	}
	key := "00000-00000-00000-00000-00000"
	if edition != "evaluation" {
		key = "LAB00-00000-00000-00000-" + fmt.Sprintf("%05d", len(edition))
	}
	return types.LicenseManagerLicenseInfo{LicenseKey: key, EditionKey: edition, Name: name, CostUnit: "cpuPackage"}
}

// queryAssignedLicenses answers LicenseAssignmentManager.QueryAssignedLicenses (vCenter only) from the
// inventory: vcsim 0.24 assigns its evaluation licence to every entity, which would make every lab host
// look unlicensed. entityId is a host MoRef value or the vCenter's instanceUuid; without one, every
// assignment is returned (hosts sorted by MoRef, then the vCenter), as vCenter does.
func (f *front) queryAssignedLicenses(w http.ResponseWriter, req *types.QueryAssignedLicenses) {
	l := f.lab
	l.mu.Lock()
	defer l.mu.Unlock()
	hostLicense := func(ref string) types.LicenseAssignmentManagerLicenseAssignment {
		license, ok := l.hostLicenses[ref]
		if !ok {
			license = labLicense(defaultHostLicense)
		}
		return types.LicenseAssignmentManagerLicenseAssignment{
			EntityId: ref, Scope: l.instanceUUID, EntityDisplayName: l.hostNames[ref], AssignedLicense: license,
		}
	}
	vcenter := types.LicenseAssignmentManagerLicenseAssignment{
		EntityId: l.instanceUUID, EntityDisplayName: "vCenter Server", AssignedLicense: l.siteLicense,
	}
	var out []types.LicenseAssignmentManagerLicenseAssignment
	switch {
	case req.EntityId == "":
		refs := make([]string, 0, len(l.hostNames))
		for ref := range l.hostNames {
			refs = append(refs, ref)
		}
		sort.Strings(refs)
		for _, ref := range refs {
			out = append(out, hostLicense(ref))
		}
		out = append(out, vcenter)
	case req.EntityId == l.instanceUUID:
		out = append(out, vcenter)
	case l.hostNames[req.EntityId] != "":
		out = append(out, hostLicense(req.EntityId))
	}
	// an unknown entity gets an empty answer, as vCenter (and vcsim) give
	writeResponse(w, "QueryAssignedLicensesResponse", &types.QueryAssignedLicensesResponse{Returnval: out})
}
