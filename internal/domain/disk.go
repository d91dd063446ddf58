package domain

import (
	"context"
	"errors"
	"fmt"
	"net"
	"path"
	"strings"

	"shi/internal/devices/blkif"
	"shi/internal/devices/blkif/toolstack"
	"shi/internal/directory"
	"shi/internal/xenstore"
)

// Disk is one entry of a config's disks list:
//
//	"host=h2,path=/var/lib/shi/d1.img,dev=xvda,mode=w,export=:10809"
//
// host is the host whose driver domain serves the image (default the
// domain's own; another host makes it a remote disk), path the raw image
// file on that host, dev the name the domain knows it by, mode "w" or
// "r" (default "w", as xl's), export an NBD address the domain's host
// serves the disk on from the start (as "shi disk export" does).
type Disk struct {
	Host   string `json:"host,omitempty"`
	Path   string `json:"path"`
	Dev    string `json:"dev"`
	Mode   string `json:"mode"`
	Export string `json:"export,omitempty"`
}

// Writable reports whether the disk is served read-write.
func (d Disk) Writable() bool { return d.Mode == "w" }

// ParseDisk parses one disks entry.
func ParseDisk(s string) (Disk, error) {
	d := Disk{Mode: "w"}
	seen := map[string]bool{}
	for _, kv := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(kv), "=")
		if !ok {
			return d, fmt.Errorf("%q is not key=value", kv)
		}
		if seen[k] {
			return d, fmt.Errorf("%q given twice", k)
		}
		seen[k] = true
		switch k {
		case "host":
			if !ValidName(v) {
				return d, fmt.Errorf("host %q is not a host name", v)
			}
			d.Host = v
		case "path", "target":
			if !strings.HasPrefix(v, "/") || path.Clean(v) != v {
				return d, fmt.Errorf("path %q: want a clean absolute path", v)
			}
			d.Path = v
		case "dev", "vdev":
			if _, err := blkif.DevID(v); err != nil || strings.ContainsAny(v, "0123456789") {
				return d, fmt.Errorf("dev %q: want a Xen disk name (xvda, xvdb, ... xvdaa ...)", v)
			}
			d.Dev = v
		case "mode", "access":
			switch v {
			case "w", "rw":
				d.Mode = "w"
			case "r", "ro":
				d.Mode = "r"
			default:
				return d, fmt.Errorf("mode %q: want w or r", v)
			}
		case "format":
			if v != "raw" {
				return d, fmt.Errorf("format %q: only raw images are served", v)
			}
		case "export":
			if _, _, err := net.SplitHostPort(v); err != nil {
				return d, fmt.Errorf("export %q: want HOST:PORT or :PORT", v)
			}
			d.Export = v
		default:
			return d, fmt.Errorf("unknown key %q (want host, path, dev, mode, export, format)", k)
		}
	}
	if d.Path == "" || d.Dev == "" {
		return d, fmt.Errorf("want at least path= and dev=")
	}
	return d, nil
}

// ParsedDisks returns the config's disks, parsed (ParseConfig checked
// them already). Each disk's host defaults to host.
func (c *Config) ParsedDisks(host string) []Disk {
	var out []Disk
	for _, s := range c.Disks {
		d, err := ParseDisk(s)
		if err != nil {
			continue
		}
		if d.Host == "" {
			d.Host = host
		}
		out = append(out, d)
	}
	return out
}

// checkDisks refuses a disks list with a bad entry or a device named twice.
func checkDisks(list []string) error {
	devs := map[string]bool{}
	for _, s := range list {
		d, err := ParseDisk(s)
		if err != nil {
			return fmt.Errorf("%q: %v", s, err)
		}
		if devs[d.Dev] {
			return fmt.Errorf("%q: dev %s named twice", s, d.Dev)
		}
		devs[d.Dev] = true
	}
	return nil
}

// diskConflict finds a running domain that holds one of cfg's disks in a
// way cfg's use excludes: a disk is served writable to one domain at most,
// and never writable to one and read-only to another. The back end's file
// lock is the last word (two creates may race); this check gives the
// clear error first, whichever hosts are involved.
func diskConflict(r *directory.Replica, host string, cfg *Config) error {
	mine := cfg.ParsedDisks(host)
	if len(mine) == 0 {
		return nil
	}
	for _, d := range r.Domains() {
		if !d.Running() || d.Driver {
			continue
		}
		other, _, err := configOf(d)
		if err != nil {
			continue
		}
		for _, o := range other.ParsedDisks(d.Host) {
			for _, m := range mine {
				if o.Host == m.Host && o.Path == m.Path && (o.Writable() || m.Writable()) {
					return fmt.Errorf("disk %s:%s is in use by domain %s (%d) as %s, mode=%s: %w",
						m.Host, m.Path, d.Name, d.ID, o.Dev, o.Mode, ErrDiskInUse)
				}
			}
		}
	}
	return nil
}

// ErrDiskInUse means a disk is already served to another domain in a way
// that excludes the one asked for.
var ErrDiskInUse = errors.New("a disk is served writable to one domain at most")

// diskKeys are the XenStore commands for cfg's disks: each is served by
// the driver domain of its host, which must be running.
func (m *Manager) diskKeys(ctx context.Context, id uint32, cfg *Config) ([]xenstore.Command, error) {
	var ops []xenstore.Command
	for _, k := range cfg.ParsedDisks(m.cfg.Host) {
		drv, ok := m.driverOf(ctx, k.Host)
		if !ok {
			return nil, fmt.Errorf("disk %s: host %q has no driver domain running (no such host, or its agent is not up)", k.Dev, k.Host)
		}
		c, err := toolstack.Keys(id, drv.ID, toolstack.Spec{Dev: k.Dev, Path: k.Path, Writable: k.Writable()})
		if err != nil {
			return nil, err
		}
		ops = append(ops, c...)
	}
	return ops, nil
}
