// vcsim-lab serves govmomi's vSphere simulator with what a backup product needs and stock vcsim
// lacks: an inventory from a file, real disk bytes, CBT, byte-freezing snapshots and fault switches.
// See README.md.
package main

import (
	"crypto/sha1"
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

type readyLine struct {
	SDK              string   `json:"sdk"`
	Control          string   `json:"control"`
	ThumbprintSha1   string   `json:"thumbprintSha1"`
	ThumbprintSha256 string   `json:"thumbprintSha256"`
	Mode             string   `json:"mode"`
	Username         string   `json:"username"`
	Password         string   `json:"password"`
	Datacenter       string   `json:"datacenter"`
	Datastore        string   `json:"datastore"`
	DatastoreDir     string   `json:"datastoreDir"`
	VMs              []vmJSON `json:"vms"`
}

func main() {
	inventoryFile := flag.String("inventory", "", "inventory JSON file (required)")
	stateDir := flag.String("state", "", "directory for datastores and snapshot copies (default: a new temp dir)")
	listen := flag.String("listen", "127.0.0.1:0", "SDK listen address")
	controlAddr := flag.String("control", "127.0.0.1:0", "control endpoint listen address")
	useTLS := flag.Bool("tls", true, "serve the SDK over HTTPS with a self-signed certificate")
	keepState := flag.Bool("keep-state", false, "keep the state directory on exit")
	flag.Parse()
	if err := run(*inventoryFile, *stateDir, *listen, *controlAddr, *useTLS, *keepState); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-lab:", err)
		os.Exit(1)
	}
}

func run(inventoryFile, stateDir, listen, controlAddr string, useTLS, keepState bool) error {
	if inventoryFile == "" {
		return fmt.Errorf("-inventory is required")
	}
	inv, err := loadInventory(inventoryFile)
	if err != nil {
		return err
	}
	// vcsim panics when it cannot listen: check the SDK address first, and hold the control one
	probe, err := net.Listen("tcp", listen)
	if err != nil {
		return fmt.Errorf("SDK address %s: %w", listen, err)
	}
	_ = probe.Close()
	ln, err := net.Listen("tcp", controlAddr)
	if err != nil {
		return fmt.Errorf("control address %s: %w", controlAddr, err)
	}
	if stateDir == "" {
		if stateDir, err = os.MkdirTemp("", "vcsim-lab-"); err != nil {
			return err
		}
	}
	if stateDir, err = filepath.Abs(stateDir); err != nil {
		return err
	}
	dsRoot := filepath.Join(stateDir, "datastores")
	if err := os.MkdirAll(dsRoot, 0o755); err != nil {
		return err
	}
	// the simulator makes its datastore directories with os.MkdirTemp: keep them under -state
	os.Setenv("TMPDIR", dsRoot)
	cleanup := func() {
		if !keepState {
			_ = os.RemoveAll(dsRoot)
		}
	}
	var model *simulator.Model
	if inv.Mode == "vcenter" {
		model = simulator.VPX()
		model.Host, model.ClusterHost, model.Machine, model.Pool = 0, len(inv.Hosts), 0, 0
	} else {
		model = simulator.ESX()
		model.Machine = 0
	}
	model.Autostart = false
	if err := model.Create(); err != nil {
		cleanup()
		return err
	}
	defer model.Remove()
	defer cleanup()
	l := newLab()
	if err := buildInventory(model, inv, l); err != nil {
		return err
	}
	model.Service.Listen = &url.URL{Host: listen, User: url.UserPassword("user", "pass")}
	if useTLS {
		cert, err := selfSignedCertificate()
		if err != nil {
			return err
		}
		model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	}
	model.Service.RegisterEndpoints = true
	server := model.Service.NewServer()
	defer server.Close()
	if inv.Mode == "vcenter" {
		if err := attachTags(server.URL, l); err != nil {
			return err
		}
	}
	fr := &front{lab: l, inner: server.Server.Config.Handler, pages: newPager()}
	server.Server.Config.Handler = fr

	go func() { _ = http.Serve(ln, &control{front: fr}) }()

	sdk := *server.URL
	sdk.User = nil
	ready := readyLine{SDK: sdk.String(), Control: "http://" + ln.Addr().String(), Mode: inv.Mode,
		Username: "user", Password: "pass", Datacenter: l.datacenter, Datastore: l.datastore, DatastoreDir: l.datastoreDir}
	if useTLS {
		der := server.Certificate().Raw
		ready.ThumbprintSha1 = thumbprint(sha1sum(der))
		ready.ThumbprintSha256 = thumbprint(sha256sum(der))
	}
	l.mu.Lock()
	ready.VMs = l.vmList()
	l.mu.Unlock()
	line, err := json.Marshal(ready)
	if err != nil {
		return err
	}
	fmt.Println(string(line))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
	log.Printf("vcsim-lab: shutting down")
	return nil
}

func thumbprint(sum []byte) string {
	var parts []string
	for _, b := range sum {
		parts = append(parts, fmt.Sprintf("%02X", b))
	}
	return strings.Join(parts, ":")
}

func sha1sum(b []byte) []byte   { s := sha1.Sum(b); return s[:] }
func sha256sum(b []byte) []byte { s := sha256.Sum256(b); return s[:] }
