package domain

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"shi/internal/directory"
)

// A plain program gets each of its disks as an NBD export on a Unix
// socket: the console helper, inside the domain, is the disk's blkif
// front end and serves it there (devices/blkfront via cli's helper). The
// sockets live in a directory of the domain's own under the manager's
// runtime directory, which every domain uid may pass through but none
// may list.

// EnvDiskPrefix starts the variable that names a disk's NBD URI:
// SHI_DISK_XVDA=nbd+unix:///xvda?socket=/run/shi/…/xvda.sock.
const EnvDiskPrefix = "SHI_DISK_"

// runDir makes (once) the manager's runtime directory: under /run/shi
// when root (domains under their own uids must pass through it), else
// under the temporary directory.
func (m *Manager) runDir() (string, error) {
	m.runOnce.Do(func() {
		base := os.TempDir()
		if os.Geteuid() == 0 {
			base = "/run/shi"
			if err := os.MkdirAll(base, 0o711); err != nil {
				m.runErr = err
				return
			}
		}
		dir, err := os.MkdirTemp(base, "domains-"+m.cfg.Host+"-")
		if err == nil {
			err = os.Chmod(dir, 0o711)
		}
		m.run, m.runErr = dir, err
	})
	return m.run, m.runErr
}

// domainRunDir is domain id's own directory: its uid's, mode 0700.
func (m *Manager) domainRunDir(id uint32) (string, error) {
	base, err := m.runDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(base, strconv.FormatUint(uint64(id), 10)), nil
}

// DiskSocket is where domain id's disk dev is served (on this host).
func (m *Manager) DiskSocket(id uint32, dev string) (string, error) {
	dir, err := m.domainRunDir(id)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, dev+".sock"), nil
}

// DiskURI is the NBD URI of a disk served on socket. The path keeps its
// slashes, as people write these URIs; what a query would misread is
// escaped.
func DiskURI(dev, socket string) string {
	return "nbd+unix:///" + dev + "?socket=" + uriEscaper.Replace(socket)
}

var uriEscaper = strings.NewReplacer("%", "%25", "&", "%26", "#", "%23", "+", "%2B", " ", "%20", "?", "%3F", ";", "%3B")

// diskEnv makes d's runtime directory and names its disks' sockets in
// its environment. Only programs under the console helper get them:
// a console = "direct" program is its disks' front end itself.
func (m *Manager) diskEnv(d directory.Domain, cfg *Config, console bool) ([]string, error) {
	if len(cfg.Disks) == 0 || !console || !m.usesConsoleHelper(cfg) {
		return nil, nil
	}
	dir, err := m.domainRunDir(d.ID)
	if err != nil {
		return nil, fmt.Errorf("disks: runtime directory: %w", err)
	}
	os.RemoveAll(dir) // a previous domain with this id
	if err := os.Mkdir(dir, 0o700); err != nil {
		return nil, fmt.Errorf("disks: %w", err)
	}
	if uid, ok := DomainUID(d.ID); ok {
		if err := os.Chown(dir, int(uid), int(uid)); err != nil {
			return nil, fmt.Errorf("disks: %w", err)
		}
	}
	var env []string
	for _, k := range cfg.ParsedDisks(m.cfg.Host) {
		sock := filepath.Join(dir, k.Dev+".sock")
		env = append(env, EnvDiskPrefix+strings.ToUpper(k.Dev)+"="+DiskURI(k.Dev, sock))
	}
	return env, nil
}

// removeRunDir removes what diskEnv made for domain id.
func (m *Manager) removeRunDir(id uint32, cfg *Config) {
	if len(cfg.Disks) == 0 {
		return
	}
	if dir, err := m.domainRunDir(id); err == nil {
		os.RemoveAll(dir)
	}
}

// DiskInfo is a disk of a domain with where its host serves it.
type DiskInfo struct {
	Disk
	// Socket is the NBD socket on the domain's host; "" when the
	// domain's program is its disks' front end itself (console = "direct").
	Socket string
}

// Disks lists d's disks. Sockets are known for domains of this host.
func (m *Manager) Disks(d directory.Domain) ([]DiskInfo, error) {
	cfg, _, err := configOf(d)
	if err != nil {
		return nil, fmt.Errorf("domain %d: its config: %w", d.ID, err)
	}
	var out []DiskInfo
	for _, k := range cfg.ParsedDisks(d.Host) {
		di := DiskInfo{Disk: k}
		if d.Host == m.cfg.Host && m.usesConsoleHelper(cfg) {
			di.Socket, _ = m.DiskSocket(d.ID, k.Dev)
		}
		out = append(out, di)
	}
	return out, nil
}
