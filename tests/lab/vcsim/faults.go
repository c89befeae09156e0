package main

import (
	"net/http"
	"path"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/soap"
	"github.com/vmware/govmomi/vim25/types"
)

// wsdlTaskName maps "VirtualMachine.createSnapshot" to "CreateSnapshot_Task".
func wsdlTaskName(descriptionID string) string {
	method := descriptionID[strings.LastIndex(descriptionID, ".")+1:]
	if method == "" {
		return descriptionID
	}
	return strings.ToUpper(method[:1]) + method[1:] + "_Task"
}

// holdRunning makes a finished task look running for the fault's duration (or until the switch is
// cleared), then restores its real outcome.
func (f *front) holdRunning(t *simulator.Task, spec *faultSpec) {
	seconds := 30.0
	if spec.Seconds != nil {
		seconds = *spec.Seconds
	}
	// only the state changes: result and error stay in place, unread by clients while running
	done := []types.PropertyChange{{Name: "info.state", Val: t.Info.State}}
	simulator.Map.Update(t, []types.PropertyChange{
		// vSphere names a task by its WSDL method ("CreateSnapshot_Task"); pyVim resolves the name of a
		// running task, and vcsim's "CreateSnapshot" does not resolve.
		{Name: "info.name", Val: wsdlTaskName(t.Info.DescriptionId)},
		{Name: "info.state", Val: types.TaskInfoStateRunning},
	})
	f.lab.mu.Lock()
	release := f.lab.hungTasks
	f.lab.mu.Unlock()
	go func() {
		select {
		case <-time.After(time.Duration(seconds * float64(time.Second))):
		case <-release:
		}
		simulator.Map.Update(t, done)
	}()
}

// expireSession answers NotAuthenticated and really ends the caller's session when the
// session-expires switch is armed.
func (f *front) expireSession(w http.ResponseWriter, r *http.Request, this types.ManagedObjectReference) bool {
	cookie, err := r.Cookie(soap.SessionCookieName)
	if err != nil {
		return false
	}
	f.lab.mu.Lock()
	spec := f.lab.fire("session-expires", "")
	f.lab.mu.Unlock()
	if spec == nil {
		return false
	}
	logout := `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/">` +
		`<soapenv:Body><Logout xmlns="urn:vim25"><_this type="SessionManager">` +
		simulator.Map.SessionManager().Self.Value + `</_this></Logout></soapenv:Body></soapenv:Envelope>`
	r2 := r.Clone(r.Context())
	r2.Header.Set("Cookie", cookie.String())
	f.record(r2, []byte(logout))
	writeFault(w, "The session is not authenticated.", &types.NotAuthenticated{
		NoPermission: types.NoPermission{Object: this, PrivilegeId: "System.View"},
	})
	return true
}

// serveFolder serves datastore files, cutting a disk read short when disk-read-error is armed.
func (f *front) serveFolder(w http.ResponseWriter, r *http.Request) {
	rel := strings.TrimPrefix(r.URL.Path, "/folder/")
	if !strings.HasSuffix(rel, ".vmdk") {
		f.inner.ServeHTTP(w, r)
		return
	}
	f.lab.mu.Lock()
	spec := f.lab.fire("disk-read-error", path.Dir(rel))
	f.lab.mu.Unlock()
	if spec == nil {
		f.inner.ServeHTTP(w, r)
		return
	}
	if spec.AfterBytes == nil {
		http.Error(w, "Input/output error reading the disk (lab fault)", http.StatusInternalServerError)
		return
	}
	f.inner.ServeHTTP(&cuttingWriter{ResponseWriter: w, left: *spec.AfterBytes}, r)
}

// cuttingWriter aborts the connection once `left` body bytes have been sent: the client sees a
// truncated body (as when a host drops a transfer mid-stream).
type cuttingWriter struct {
	http.ResponseWriter
	left int64
}

func (c *cuttingWriter) Write(b []byte) (int, error) {
	if int64(len(b)) <= c.left {
		c.left -= int64(len(b))
		return c.ResponseWriter.Write(b)
	}
	_, _ = c.ResponseWriter.Write(b[:c.left])
	c.left = 0
	if fl, ok := c.ResponseWriter.(http.Flusher); ok {
		fl.Flush()
	}
	panic(http.ErrAbortHandler)
}
