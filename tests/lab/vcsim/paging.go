package main

import (
	"bytes"
	"fmt"
	"net/http"
	"sync"

	"github.com/vmware/govmomi/vim25/types"
	"github.com/vmware/govmomi/vim25/xml"
)

// defaultPage is how many objects one RetrievePropertiesEx answer holds when the client sets no
// maxObjects: vCenter also answers big inventories in pages, so clients must follow the token.
const defaultPage = 100

// pager splits RetrievePropertiesEx answers into pages (vcsim 0.24 ignores maxObjects and lacks
// ContinueRetrievePropertiesEx). The simulator's full answer is cut at its top-level <objects>.
type pager struct {
	mu      sync.Mutex
	next    int
	pending map[string]*pendingPages
}

type pendingPages struct {
	chunks [][]byte
	size   int
}

func newPager() *pager { return &pager{pending: map[string]*pendingPages{}} }

// objectChunks returns the raw XML of each <objects> element of a RetrievePropertiesEx response,
// with the bytes before the first and after the last.
func objectChunks(response []byte) (head []byte, chunks [][]byte, tail []byte, err error) {
	dec := xml.NewDecoder(bytes.NewReader(response))
	depth, start := 0, int64(-1)
	first, last := int64(-1), int64(-1)
	for {
		before := dec.InputOffset()
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			// Envelope(1) > Body(2) > RetrievePropertiesExResponse(3) > returnval(4) > objects(5)
			if depth == 5 && t.Name.Local == "objects" {
				start = before
				if first < 0 {
					first = before
				}
			}
		case xml.EndElement:
			if depth == 5 && t.Name.Local == "objects" && start >= 0 {
				end := dec.InputOffset()
				chunks = append(chunks, response[start:end])
				last, start = end, -1
			}
			depth--
		}
	}
	if first < 0 {
		return nil, nil, nil, fmt.Errorf("no objects")
	}
	return response[:first], chunks, response[last:], nil
}

// page answers a RetrievePropertiesEx from the simulator's full response, keeping the rest for
// ContinueRetrievePropertiesEx. It returns false when the response needs no paging.
func (p *pager) page(w http.ResponseWriter, req *types.RetrievePropertiesEx, response []byte) bool {
	size := int(req.Options.MaxObjects)
	if size <= 0 {
		size = defaultPage
	}
	head, chunks, tail, err := objectChunks(response)
	if err != nil || len(chunks) <= size {
		return false
	}
	token := p.keep(chunks[size:], size)
	var out bytes.Buffer
	out.Write(head)
	fmt.Fprintf(&out, "<token>%s</token>", token)
	for _, c := range chunks[:size] {
		out.Write(c)
	}
	out.Write(tail)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out.Bytes())
	return true
}

func (p *pager) keep(chunks [][]byte, size int) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.next++
	token := fmt.Sprintf("lab-page-%d", p.next)
	p.pending[token] = &pendingPages{chunks: chunks, size: size}
	return token
}

func (p *pager) continueRetrieve(w http.ResponseWriter, token string) {
	p.mu.Lock()
	pending, ok := p.pending[token]
	delete(p.pending, token)
	p.mu.Unlock()
	if !ok {
		writeFault(w, "A specified parameter was not correct: token", &types.InvalidArgument{InvalidProperty: "token"})
		return
	}
	n := pending.size
	if n > len(pending.chunks) {
		n = len(pending.chunks)
	}
	var body bytes.Buffer
	body.WriteString(envelopeStart)
	body.WriteString(`<ContinueRetrievePropertiesExResponse xmlns="urn:vim25"><returnval>`)
	if n < len(pending.chunks) {
		next := p.keep(pending.chunks[n:], pending.size)
		fmt.Fprintf(&body, "<token>%s</token>", next)
	}
	for _, c := range pending.chunks[:n] {
		body.Write(c)
	}
	body.WriteString(`</returnval></ContinueRetrievePropertiesExResponse>`)
	body.WriteString(envelopeEnd)
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body.Bytes())
}

func (p *pager) cancel(w http.ResponseWriter, token string) {
	p.mu.Lock()
	delete(p.pending, token)
	p.mu.Unlock()
	writeResponse(w, "CancelRetrievePropertiesExResponse", &struct{}{})
}
