package xenstore

import (
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
		return wire.JoinStrings("check\nhelp\nlog\nprint\nquota [set NAME VALUE]\n"), nil, 0
	case "log", "print", "logfile":
		return wire.JoinStrings("OK"), nil, 0
	case "quota":
		// "quota" lists the limits; "quota set NAME VALUE" changes one
		// for every host (it is replicated like any change).
		if len(ss) == 4 && ss[1] == "set" {
			return nil, &Command{Op: OpSetQuota, Path: ss[2], Value: []byte(ss[3])}, 0
		}
		if len(ss) != 1 {
			return nil, nil, syscall.EINVAL
		}
		return wire.JoinStrings(e.state.meta.quota.String()), nil, 0
	}
	return nil, nil, syscall.ENOSYS
}
