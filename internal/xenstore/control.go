package xenstore

import (
	"fmt"
	"strings"
	"syscall"

	"shi/internal/xenstore/wire"
)

// control answers XS_CONTROL. The command set is implementation-defined;
// these are the ones useful without a hypervisor.
func (e *Engine) control(payload []byte) ([]byte, *Command, syscall.Errno) {
	ss, err := wire.Strings(payload)
	if err != nil || len(ss) == 0 {
		return nil, nil, syscall.EINVAL
	}
	switch ss[0] {
	case "check":
		if err := e.state.Check(); err != nil {
			return []byte(err.Error() + "\x00"), nil, 0
		}
		return wire.JoinStrings("OK"), nil, 0
	case "help":
		return wire.JoinStrings("check\nhelp\nlog\nprint\nquota\n"), nil, 0
	case "log", "print", "logfile":
		return wire.JoinStrings("OK"), nil, 0
	case "quota":
		q := e.state.meta.quota
		var b strings.Builder
		fmt.Fprintf(&b, "Nodes per domain: %d\nNode size: %d\nPermissions per node: %d\nPath length: %d\n",
			q.MaxNodes, q.MaxNodeSize, q.MaxPerms, q.MaxPathLen)
		fmt.Fprintf(&b, "Watches per domain: %d\nTransactions per connection: %d\nNodes per transaction: %d\n",
			q.MaxWatches, q.MaxTransactions, q.MaxTxNodes)
		fmt.Fprintf(&b, "Outstanding requests: %d\nQueued watch events: %d\n", q.MaxOutstanding, q.MaxQueuedEvents)
		return wire.JoinStrings(b.String()), nil, 0
	}
	return nil, nil, syscall.ENOSYS
}
