package main

import (
	"context"
	"fmt"
	"net/url"
	"strings"

	"github.com/vmware/govmomi/vapi/rest"
	_ "github.com/vmware/govmomi/vapi/simulator" // registers the vAPI REST endpoints (/rest) on VPX
	"github.com/vmware/govmomi/vapi/tags"
	"github.com/vmware/govmomi/vim25"
	"github.com/vmware/govmomi/vim25/soap"
)

// attachTags creates the inventory's tags in vCenter's tagging service (vAPI REST, as real vCenter
// has) and attaches them. "category:name" tags go into that category; a bare "name" into "lab".
func attachTags(server *url.URL, l *lab) error {
	ctx := context.Background()
	vc, err := vim25.NewClient(ctx, soap.NewClient(server, true))
	if err != nil {
		return err
	}
	rc := rest.NewClient(vc)
	if err := rc.Login(ctx, url.UserPassword("user", "pass")); err != nil {
		return fmt.Errorf("vAPI login: %w", err)
	}
	defer func() { _ = rc.Logout(ctx) }()
	m := tags.NewManager(rc)
	categories := map[string]string{}
	tagIDs := map[string]string{}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, name := range l.order {
		vm := l.vms[name]
		for _, tag := range vm.tags {
			id, ok := tagIDs[tag]
			if !ok {
				category, tagName := "lab", tag
				if i := strings.Index(tag, ":"); i > 0 {
					category, tagName = tag[:i], tag[i+1:]
				}
				categoryID, ok := categories[category]
				if !ok {
					categoryID, err = m.CreateCategory(ctx, &tags.Category{
						Name: category, Cardinality: "MULTIPLE", AssociableTypes: []string{"VirtualMachine"},
					})
					if err != nil {
						return fmt.Errorf("tag category %s: %w", category, err)
					}
					categories[category] = categoryID
				}
				if id, err = m.CreateTag(ctx, &tags.Tag{Name: tagName, CategoryID: categoryID}); err != nil {
					return fmt.Errorf("tag %s: %w", tag, err)
				}
				tagIDs[tag] = id
			}
			if err := m.AttachTag(ctx, id, vm.ref); err != nil {
				return fmt.Errorf("attach %s to %s: %w", tag, vm.name, err)
			}
		}
	}
	return nil
}
