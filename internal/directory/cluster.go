package directory

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	"shi/internal/xenstore"
)

// Cluster is the Committer of a multi-host directory: on the leader an
// entry goes into the Raft log; on a follower it is forwarded to the
// leader's API. Clients never see "not leader": Commit waits for a leader
// until ctx ends, and then reports ErrNoQuorum.
type Cluster struct {
	Node *Node
	// APIOf returns the API URL of a host by name ("" if unknown).
	APIOf func(name string) string
	HTTP  *http.Client
	// Key, when set (the cluster's -encrypt key), authenticates forwarded
	// requests: each carries an HMAC-SHA256 of its body, and the leader
	// refuses those without a valid one.
	Key []byte
}

// authHeader carries the HMAC of a forwarded request's body.
const authHeader = "X-Shi-Auth"

func (c *Cluster) mac(body []byte) string {
	m := hmac.New(sha256.New, c.Key)
	m.Write([]byte("shi-forward\x00"))
	m.Write(body)
	return hex.EncodeToString(m.Sum(nil))
}

// authentic checks a forwarded request's HMAC (always true without a key).
func (c *Cluster) authentic(r *http.Request, body []byte) bool {
	if len(c.Key) == 0 {
		return true
	}
	got, err := hex.DecodeString(r.Header.Get(authHeader))
	want, _ := hex.DecodeString(c.mac(body))
	return err == nil && hmac.Equal(got, want)
}

var _ Committer = (*Cluster)(nil)

// Commit implements Committer.
func (c *Cluster) Commit(ctx context.Context, entry []byte) (uint64, Response, error) {
	if err := ValidEntry(entry); err != nil {
		return 0, Response{}, err
	}
	return retry(ctx, func() (uint64, Response, error) {
		if c.Node.IsLeader() {
			return c.Node.Apply(ctx, entry)
		}
		url := c.leaderAPI()
		if url == "" {
			return 0, Response{}, ErrNotLeader
		}
		var fr forwardReply
		if err := c.post(ctx, url+"/v1/internal/commit", entry, &fr); err != nil {
			return 0, Response{}, err
		}
		return fr.Index, fr.response(), nil
	})
}

// ReadIndex returns an index that a linearizable read must wait for.
func (c *Cluster) ReadIndex(ctx context.Context) (uint64, error) {
	idx, _, err := retry(ctx, func() (uint64, Response, error) {
		if c.Node.IsLeader() {
			i, err := c.Node.ReadIndex(ctx)
			return i, Response{}, err
		}
		url := c.leaderAPI()
		if url == "" {
			return 0, Response{}, ErrNotLeader
		}
		var fr forwardReply
		err := c.post(ctx, url+"/v1/internal/readindex", nil, &fr)
		return fr.Index, Response{}, err
	})
	return idx, err
}

func (c *Cluster) leaderAPI() string {
	if l := c.Node.Leader(); l != "" && c.APIOf != nil {
		return c.APIOf(l)
	}
	return ""
}

// retry runs fn until it succeeds, fails for good, or ctx ends.
func retry(ctx context.Context, fn func() (uint64, Response, error)) (uint64, Response, error) {
	backoff := 10 * time.Millisecond
	for {
		idx, resp, err := fn()
		if err == nil || !errors.Is(err, ErrNotLeader) {
			return idx, resp, err
		}
		select {
		case <-ctx.Done():
			return 0, Response{}, fmt.Errorf("%w (%v)", ErrNoQuorum, err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 200*time.Millisecond)
	}
}

// forwardReply is the leader's answer to a forwarded entry.
type forwardReply struct {
	Index  uint64  `json:"index"`
	Errno  int     `json:"errno,omitempty"`
	Err    string  `json:"err,omitempty"`
	Domain *Domain `json:"domain,omitempty"`
}

func (f forwardReply) response() Response {
	return Response{Xs: xenstore.Result{Err: syscall.Errno(f.Errno)}, Err: f.Err, Domain: f.Domain}
}

// post sends a request to the leader. Failing to connect means the entry
// was never delivered (ErrNotLeader: try again); failing after that is
// ErrIndeterminate.
func (c *Cluster) post(ctx context.Context, url string, body []byte, out *forwardReply) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	if len(c.Key) > 0 {
		req.Header.Set(authHeader, c.mac(body))
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		var op *net.OpError
		if errors.As(err, &op) && op.Op == "dial" {
			return fmt.Errorf("%w: %v", ErrNotLeader, err)
		}
		return fmt.Errorf("%w: %v", ErrIndeterminate, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch resp.StatusCode {
	case http.StatusOK:
		return json.Unmarshal(b, out)
	case http.StatusServiceUnavailable, http.StatusMisdirectedRequest:
		return fmt.Errorf("%w: %s", ErrNotLeader, bytes.TrimSpace(b))
	}
	return fmt.Errorf("%w: leader answered %s: %s", ErrIndeterminate, resp.Status, bytes.TrimSpace(b))
}

// MaxEntry bounds a forwarded entry (a XenStore transaction is far smaller).
const MaxEntry = 1 << 20

// ServeCommit handles a forwarded entry on the leader.
func (c *Cluster) ServeCommit(w http.ResponseWriter, r *http.Request) {
	entry, err := io.ReadAll(io.LimitReader(r.Body, MaxEntry+1))
	if err != nil || len(entry) > MaxEntry || ValidEntry(entry) != nil {
		http.Error(w, "bad entry", http.StatusBadRequest)
		return
	}
	if !c.authentic(r, entry) {
		http.Error(w, "not authenticated", http.StatusForbidden)
		return
	}
	if !c.Node.IsLeader() {
		http.Error(w, "not the leader", http.StatusServiceUnavailable)
		return
	}
	idx, resp, err := c.Node.Apply(r.Context(), entry)
	if errors.Is(err, ErrNotLeader) {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	c.Node.Nudge()
	writeReply(w, forwardReply{Index: idx, Errno: int(resp.Xs.Err), Err: resp.Err, Domain: resp.Domain})
}

// ServeReadIndex handles a forwarded read-index request on the leader.
func (c *Cluster) ServeReadIndex(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<10))
	if !c.authentic(r, body) {
		http.Error(w, "not authenticated", http.StatusForbidden)
		return
	}
	idx, err := c.Node.ReadIndex(r.Context())
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	writeReply(w, forwardReply{Index: idx})
}

func writeReply(w http.ResponseWriter, fr forwardReply) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(fr)
}
