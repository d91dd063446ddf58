package domain

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"shi/internal/directory"
	"shi/internal/xenstore"
)

// writeKeys writes what a Xen toolstack writes for a new domain, in one
// transaction as domain 0. The domain owns its home (it may create nodes
// anywhere under it, e.g. data/ and device/), but the toolstack's own
// keys there (name, domid, vm, memory/, cpu/) are owned by domain 0 and
// only readable by it, so it cannot rename itself. /vm/<uuid> likewise.
func (m *Manager) writeKeys(ctx context.Context, d directory.Domain, cfg *Config) (console bool, err error) {
	id := d.ID
	home := "/local/domain/" + strconv.FormatUint(uint64(id), 10)
	vm := "/vm/" + d.UUID
	mine := xenstore.Perms{{Dom: id}}
	tools := xenstore.Perms{{Dom: 0}, {Dom: id, Bits: xenstore.PermRead}}
	var ops []xenstore.Command
	node := func(path string, value *string, perms xenstore.Perms) {
		if value == nil {
			ops = append(ops, xenstore.Command{Op: xenstore.OpMkdir, Path: path})
		} else {
			ops = append(ops, xenstore.Command{Op: xenstore.OpWrite, Path: path, Value: []byte(*value)})
		}
		ops = append(ops, xenstore.Command{Op: xenstore.OpSetPerms, Path: path, Perms: perms})
	}
	s := func(v string) *string { return &v }
	kib := strconv.FormatUint(cfg.MemoryMiB<<10, 10)

	node(home, nil, mine)
	node(home+"/name", s(d.Name), tools)
	node(home+"/domid", s(strconv.FormatUint(uint64(id), 10)), tools)
	node(home+"/vm", s(vm), tools)
	node(home+"/memory", nil, tools)
	node(home+"/memory/static-max", s(kib), tools)
	node(home+"/memory/target", s(kib), tools)
	node(home+"/cpu", nil, tools)
	for i := range max(cfg.VCPUs, 1) {
		node(fmt.Sprintf("%s/cpu/%d", home, i), nil, tools)
		node(fmt.Sprintf("%s/cpu/%d/availability", home, i), s("online"), tools)
	}
	node(home+"/control", nil, mine)
	node(home+"/control/shutdown", s(""), mine)
	node(home+"/data", nil, mine)
	node(home+"/device", nil, mine)
	node(vm, nil, tools)
	node(vm+"/name", s(d.Name), tools)
	node(vm+"/uuid", s(d.UUID), tools)
	node(vm+"/start_time", s(fmt.Sprintf("%.2f", float64(d.Created)/float64(time.Second))), tools)

	// The console: the driver domain that serves it must exist.
	drv, ok, err := m.consoleBackend(ctx, cfg)
	if err != nil {
		return false, err
	}
	if ok {
		ops = append(ops, consoleKeys(id, drv.ID, cfg)...)
	}
	disks, err := m.diskKeys(ctx, id, cfg)
	if err != nil {
		return false, err
	}
	ops = append(ops, disks...)

	idx, resp, err := m.cfg.Committer.Commit(ctx, directory.XenstoreEntry(&xenstore.Command{Op: xenstore.OpTx, Ops: ops}))
	if err != nil {
		return false, fmt.Errorf("xenstore keys: %w", err)
	}
	if resp.Xs.Err != 0 {
		return false, fmt.Errorf("xenstore keys: %w", resp.Xs.Err)
	}
	// The domain's own connections read this host's replica: its first
	// read (its console's backend-id, say) must find the keys there,
	// even when the leader that committed them is another host.
	if err := m.cfg.Replica.WaitApplied(ctx, idx); err != nil {
		return false, fmt.Errorf("xenstore keys: %w", err)
	}
	return ok, nil
}
