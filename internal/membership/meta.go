package membership

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"

	"github.com/hashicorp/memberlist"
)

// Meta is what each host gossips about itself. It travels in memberlist's
// node metadata, so its encoding must stay within MaxMetaSize bytes.
type Meta struct {
	// APIURL is the agent's HTTP API, "http://IP:PORT".
	APIURL string `json:"api,omitempty"`
	// RaftAddr is the directory's Raft transport address, "IP:PORT".
	RaftAddr string `json:"raft,omitempty"`
	// DataAddr is the agent-to-agent data plane address, "IP:PORT".
	DataAddr string `json:"data,omitempty"`
	// CPUs is the number of CPUs the host offers to domains.
	CPUs int `json:"cpus,omitempty"`
	// MemTotal and MemFree are the host's memory for domains, in bytes.
	MemTotal uint64 `json:"mem,omitempty"`
	MemFree  uint64 `json:"free,omitempty"`
	// Version is the agent's version string.
	Version string `json:"ver,omitempty"`
	// InCluster is set once the host belongs to a directory cluster, so
	// that a host joining later never bootstraps a second one.
	InCluster bool `json:"in,omitempty"`
}

// wireMeta is Meta plus what only this package uses.
type wireMeta struct {
	Meta
	// Leaving is set just before a graceful Leave, so that peers can tell
	// a host that left from one that failed: memberlist reports both the
	// same way.
	Leaving bool `json:"leaving,omitempty"`
}

// MaxMetaSize is the largest encoded Meta memberlist carries.
const MaxMetaSize = memberlist.MetaMaxSize

// Limits on Meta's strings; they keep the encoding within MaxMetaSize.
const (
	maxAddrLen    = 100
	maxVersionLen = 40
	maxCPUs       = 1 << 20
)

var errMetaTooLarge = fmt.Errorf("membership: meta larger than %d bytes", MaxMetaSize)

// Validate reports whether m can be gossiped: printable ASCII strings of
// bounded length, well-formed addresses, free memory not above total.
func (m Meta) Validate() error {
	if err := checkString("api", m.APIURL, maxAddrLen); err != nil {
		return err
	}
	if m.APIURL != "" {
		u, err := url.Parse(m.APIURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("membership: meta api %q is not an http(s) URL", m.APIURL)
		}
	}
	for _, a := range []struct{ name, v string }{{"raft", m.RaftAddr}, {"data", m.DataAddr}} {
		if err := checkString(a.name, a.v, maxAddrLen); err != nil {
			return err
		}
		if a.v != "" {
			if err := checkHostPort(a.v); err != nil {
				return fmt.Errorf("membership: meta %s address %q: %w", a.name, a.v, err)
			}
		}
	}
	if err := checkString("ver", m.Version, maxVersionLen); err != nil {
		return err
	}
	if m.CPUs < 0 || m.CPUs > maxCPUs {
		return fmt.Errorf("membership: meta cpus %d out of range", m.CPUs)
	}
	if m.MemFree > m.MemTotal {
		return fmt.Errorf("membership: meta free memory %d above total %d", m.MemFree, m.MemTotal)
	}
	return nil
}

func checkString(field, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("membership: meta %s longer than %d bytes", field, limit)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return fmt.Errorf("membership: meta %s has a byte 0x%02x that is not printable ASCII", field, s[i])
		}
	}
	return nil
}

func checkHostPort(a string) error {
	h, p, err := net.SplitHostPort(a)
	if err != nil {
		return err
	}
	if h == "" {
		return errors.New("no host")
	}
	if n, err := strconv.ParseUint(p, 10, 16); err != nil || n == 0 {
		return errors.New("bad port")
	}
	return nil
}

// encodeMeta validates and encodes m.
func encodeMeta(m wireMeta) ([]byte, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(m); err != nil {
		return nil, err
	}
	b := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	if len(b) > MaxMetaSize {
		return nil, errMetaTooLarge
	}
	return b, nil
}

// decodeMeta decodes and validates meta that came from the network. Empty
// meta decodes to the zero Meta.
func decodeMeta(b []byte) (wireMeta, error) {
	var m wireMeta
	if len(b) == 0 {
		return m, nil
	}
	if len(b) > MaxMetaSize {
		return wireMeta{}, errMetaTooLarge
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return wireMeta{}, fmt.Errorf("membership: bad meta: %w", err)
	}
	if err := m.Validate(); err != nil {
		return wireMeta{}, err
	}
	return m, nil
}
