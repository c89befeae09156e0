package main

import (
	"bytes"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// front is the HTTP handler placed in front of vcsim's own: it answers what vcsim lacks and injects
// faults, then hands every other request to the simulator unchanged (see README: wrapping the
// simulator's objects breaks it, wrapping its HTTP handler does not).
type front struct {
	lab   *lab
	inner http.Handler
	pages *pager
}

func (f *front) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case r.Method == http.MethodPost && (r.URL.Path == "/sdk" || r.URL.Path == "/sdk/vimService"):
		f.serveSOAP(w, r)
	case r.Method == http.MethodGet && strings.HasPrefix(r.URL.Path, "/folder/"):
		f.serveFolder(w, r)
	default:
		f.inner.ServeHTTP(w, r)
	}
}

var sessionless = map[string]bool{
	"RetrieveServiceContent": true, "Login": true, "LoginByToken": true, "LoginExtensionByCertificate": true,
	"CloneSession": true, "Logout": true,
}

var taskRef = regexp.MustCompile(`<returnval type="Task">([^<]+)</returnval>`)

func (f *front) serveSOAP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	_ = r.Body.Close()
	if err != nil {
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		f.pass(w, r, body)
		return
	}
	if !sessionless[method.Name] && f.expireSession(w, r, method.This) {
		return
	}
	switch req := method.Body.(type) {
	case *types.QueryChangedDiskAreas:
		f.queryChangedDiskAreas(w, req)
		return
	case *types.RetrievePropertiesEx:
		rec := f.record(r, body)
		if rec.Code != http.StatusOK || !f.pages.page(w, req, rec.Body.Bytes()) {
			copyResponse(w, rec)
		}
		return
	case *types.QueryAssignedLicenses:
		if f.lab.vcenter { // a standalone host has no LicenseAssignmentManager: vcsim faults, as ESXi does
			f.queryAssignedLicenses(w, req)
			return
		}
	case *types.ContinueRetrievePropertiesEx:
		f.pages.continueRetrieve(w, req.Token)
		return
	case *types.CancelRetrievePropertiesEx:
		f.pages.cancel(w, req.Token)
		return
	case *types.CreateSnapshot_Task:
		if f.refuseCreateSnapshot(w, req) {
			return
		}
	case *types.RemoveSnapshot_Task:
		if f.refuseRemoveSnapshot(w, req) {
			return
		}
	case *types.ConsolidateVMDisks_Task:
		f.consolidateVMDisks(w, req)
		return
	}
	if method.Name == "Fetch" {
		f.fetch(w, r, body, method.This)
		return
	}
	owner := snapshotOwner(method.This)
	rec := f.record(r, body)
	if rec.Code == http.StatusOK {
		f.after(method, rec.Body.Bytes(), owner)
	}
	copyResponse(w, rec)
}

func (f *front) record(r *http.Request, body []byte) *httptest.ResponseRecorder {
	rec := httptest.NewRecorder()
	r2 := r.Clone(r.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	f.inner.ServeHTTP(rec, r2)
	return rec
}

// fetch serves pyVmomi's single-property reads. vcsim 0.24 panics (dropping the connection) when the
// property is unset, e.g. `vm.snapshot` on a VM without snapshots; vSphere answers "unset".
func (f *front) fetch(w http.ResponseWriter, r *http.Request, body []byte, this types.ManagedObjectReference) {
	rec, panicked := f.recordSafely(r, body)
	if !panicked {
		copyResponse(w, rec)
		return
	}
	if simulator.Map.Get(this) == nil {
		writeFault(w, "The object has already been deleted or has not been completely created",
			&types.ManagedObjectNotFound{Obj: this})
		return
	}
	writeResponse(w, "FetchResponse", &struct{}{})
}

func (f *front) recordSafely(r *http.Request, body []byte) (rec *httptest.ResponseRecorder, panicked bool) {
	defer func() {
		if recover() != nil {
			panicked = true
		}
	}()
	return f.record(r, body), false
}

func (f *front) pass(w http.ResponseWriter, r *http.Request, body []byte) {
	copyResponse(w, f.record(r, body))
}

func copyResponse(w http.ResponseWriter, rec *httptest.ResponseRecorder) {
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	_, _ = w.Write(rec.Body.Bytes())
}

// after updates the lab's state once the simulator has executed a call.
func (f *front) after(method *simulator.Method, response []byte, owner *simulator.VirtualMachine) {
	var task *simulator.Task
	if m := taskRef.FindSubmatch(response); m != nil {
		if t, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task", Value: string(m[1])}).(*simulator.Task); ok {
			task = t
		}
	}
	if task != nil && owner != nil {
		setTaskEntity(task, owner)
	}
	succeeded := task != nil && task.Info.State == types.TaskInfoStateSuccess
	switch req := method.Body.(type) {
	case *types.CreateSnapshot_Task:
		if succeeded {
			if err := f.freeze(req.This, task.Info.Result); err != nil {
				log.Printf("freezing snapshot of %s: %v", req.This.Value, err)
			}
		}
	case *types.RemoveSnapshot_Task, *types.RemoveAllSnapshots_Task, *types.Destroy_Task:
		f.sweepSnapshots()
	case *types.ReconfigVM_Task:
		if succeeded && req.Spec.ChangeTrackingEnabled != nil {
			f.setCBT(req.This, *req.Spec.ChangeTrackingEnabled, false)
		}
	}
	if task != nil {
		f.lab.mu.Lock()
		vmName := ""
		if vm := f.lab.byRef[method.This.Value]; vm != nil {
			vmName = vm.name
		} else if owner != nil && f.lab.byRef[owner.Self.Value] != nil {
			vmName = f.lab.byRef[owner.Self.Value].name
		}
		hang := f.lab.fire("task-hangs", vmName)
		f.lab.mu.Unlock()
		if hang != nil {
			f.holdRunning(task, hang)
		}
	}
}

const envelopeStart = `<?xml version="1.0" encoding="UTF-8"?>` +
	`<soapenv:Envelope xmlns:soapenc="http://schemas.xmlsoap.org/soap/encoding/" ` +
	`xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" ` +
	`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>`

const envelopeEnd = `</soapenv:Body></soapenv:Envelope>`

func writeResponse(w http.ResponseWriter, element string, res interface{}) {
	var buf bytes.Buffer
	buf.WriteString(envelopeStart)
	e := xml.NewEncoder(&buf)
	start := xml.StartElement{Name: xml.Name{Local: element}, Attr: []xml.Attr{{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"}}}
	if err := e.EncodeElement(res, start); err != nil {
		log.Printf("encoding %s: %v", element, err)
	}
	_ = e.Flush()
	buf.WriteString(envelopeEnd)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
}

// writeFault answers with a SOAP fault whose detail is the vim fault, which pyVmomi raises as vim.fault.*.
func writeFault(w http.ResponseWriter, msg string, fault types.BaseMethodFault) {
	kind := reflect.TypeOf(fault).Elem().Name()
	var buf bytes.Buffer
	buf.WriteString(envelopeStart)
	buf.WriteString(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode><faultstring>`)
	_ = xml.EscapeText(&buf, []byte(msg))
	buf.WriteString(`</faultstring><detail>`)
	e := xml.NewEncoder(&buf)
	start := xml.StartElement{Name: xml.Name{Local: kind + "Fault"}, Attr: []xml.Attr{
		{Name: xml.Name{Local: "xmlns"}, Value: "urn:vim25"},
		{Name: xml.Name{Local: "xsi:type"}, Value: kind},
	}}
	if err := e.EncodeElement(fault, start); err != nil {
		log.Printf("encoding fault %s: %v", kind, err)
	}
	_ = e.Flush()
	buf.WriteString(`</detail></soapenv:Fault>`)
	buf.WriteString(envelopeEnd)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	_, _ = w.Write(buf.Bytes())
}
