package domain

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Config is a domain's configuration, from an xl-style file:
//
//	name = "web"                    # required
//	memory = 64                     # MiB it may use in all, shareable pages included (default 16)
//	pids = 512                      # processes and threads it may have (default 512)
//	cmd = "/usr/local/bin/server"   # required: the program the domain runs
//	args = [ "-port", "80" ]
//	env = [ "MODE=prod" ]
//	on_crash = "restart"            # or "destroy" (default)
//	disks = [ "host=h2,path=/var/lib/shi/d1.img,dev=xvda,mode=w" ]  # see Disk
//	vchans = [ "..." ]              # kept for vchan setup
//	xen_libs = 1                    # run with shi's libxenevtchn/libxengnttab
//	console = "direct"              # the program drives its console ring (default "pty")
//	console_backend = "h2"          # the host whose driver domain serves the console
//	console_log = "/var/log/x.log"  # a transcript, on the back end's host
//
// console = "pty" (the default) starts the program on a pseudo-terminal
// joined to the domain's console by a helper that holds the domain's
// agent connection; a program that uses the guest library itself (its
// agent connection, fd 3) runs with console = "direct", which xen_libs = 1
// implies.
//
// xen_libs = 1 is for unmodified Xen programs (vchan-socket-proxy, or
// anything linked with libxenvchan): the agent starts the domain with
// LD_LIBRARY_PATH and LD_PRELOAD naming the replacement libraries in
// its -xen-libs directory (scripts/build-libxen.sh builds them), so that
// they survive a shell on the way ("sh -c '... exec prog'"). An agent
// started without -xen-libs refuses such a domain.
//
// Also: uuid, vcpus, grant_frames, max_event_channels, max_maps. Values
// are "strings" or 'strings' (with \" \' \\ \n \t \r \xHH escapes),
// decimal or 0x numbers, or [lists] of them that may span lines;
// statements end at a newline or ';'; '#' starts a comment.
type Config struct {
	Name             string   `json:"name"`
	MemoryMiB        uint64   `json:"memory"`
	Cmd              string   `json:"cmd"`
	Args             []string `json:"args,omitempty"`
	Env              []string `json:"env,omitempty"`
	OnCrash          string   `json:"on_crash"`
	UUID             string   `json:"uuid,omitempty"`
	VCPUs            int      `json:"vcpus,omitempty"`
	Pids             int      `json:"pids,omitempty"`
	Disks            []string `json:"disks,omitempty"`
	Vchans           []string `json:"vchans,omitempty"`
	GrantFrames      int      `json:"grant_frames,omitempty"`
	MaxEventChannels int      `json:"max_event_channels,omitempty"`
	MaxMaps          int      `json:"max_maps,omitempty"`
	XenLibs          bool     `json:"xen_libs,omitempty"`
	Console          string   `json:"console,omitempty"`
	ConsoleBackend   string   `json:"console_backend,omitempty"`
	ConsoleLog       string   `json:"console_log,omitempty"`
}

// Console modes.
const (
	ConsolePTY    = "pty"
	ConsoleDirect = "direct"
)

// ConsoleMode is the domain's console mode, with its default.
func (c *Config) ConsoleMode() string {
	if c.Console == ConsoleDirect || c.XenLibs {
		return ConsoleDirect
	}
	return ConsolePTY
}

// on_crash actions.
const (
	OnCrashDestroy = "destroy"
	OnCrashRestart = "restart"
)

// Config defaults and bounds.
const (
	DefaultMemoryMiB = 16
	MaxMemoryMiB     = 1 << 20
	DefaultPids      = 512
	MaxPids          = 1 << 22
	maxListLen       = 1024
	MaxConfigSize    = 1 << 20
)

// ConfigError is a mistake in a config file, with its line.
type ConfigError struct {
	Line int
	Msg  string
}

func (e *ConfigError) Error() string {
	if e.Line == 0 {
		return "config: " + e.Msg
	}
	return fmt.Sprintf("config line %d: %s", e.Line, e.Msg)
}

// value is one parsed value: a string, a number or a list.
type value struct {
	line int
	kind byte // 's', 'n', 'l'
	s    string
	n    uint64
	list []value
}

func (v value) describe() string {
	switch v.kind {
	case 's':
		return "a string"
	case 'n':
		return "a number"
	}
	return "a list"
}

// ParseConfig parses and checks an xl-style domain config.
func ParseConfig(src string) (*Config, error) {
	if len(src) > MaxConfigSize {
		return nil, &ConfigError{Msg: "file too large"}
	}
	if !utf8.ValidString(src) {
		return nil, &ConfigError{Msg: "not UTF-8 text"}
	}
	p := &parser{src: src, line: 1}
	kv, err := p.file()
	if err != nil {
		return nil, err
	}
	c := &Config{MemoryMiB: DefaultMemoryMiB, OnCrash: OnCrashDestroy}
	seen := map[string]int{}
	for _, e := range kv {
		if l, dup := seen[e.key]; dup {
			return nil, &ConfigError{e.val.line, fmt.Sprintf("%q set again (first on line %d)", e.key, l)}
		}
		seen[e.key] = e.val.line
		if err := c.set(e.key, e.val); err != nil {
			return nil, err
		}
	}
	for _, k := range []string{"name", "cmd"} {
		if _, ok := seen[k]; !ok {
			return nil, &ConfigError{Msg: fmt.Sprintf("%q is required", k)}
		}
	}
	return c, nil
}

func (c *Config) set(key string, v value) error {
	bad := func(format string, args ...any) error {
		return &ConfigError{v.line, fmt.Sprintf("%q: ", key) + fmt.Sprintf(format, args...)}
	}
	want := func(kind byte) error {
		if v.kind == kind {
			return nil
		}
		w := map[byte]string{'s': "a string", 'n': "a number", 'l': "a list"}[kind]
		return bad("want %s, got %s", w, v.describe())
	}
	strs := func() ([]string, error) {
		if err := want('l'); err != nil {
			return nil, err
		}
		var out []string
		for _, e := range v.list {
			if e.kind != 's' {
				return nil, bad("want a list of strings, got %s in it", e.describe())
			}
			if strings.IndexByte(e.s, 0) >= 0 {
				return nil, bad("NUL byte in a string")
			}
			out = append(out, e.s)
		}
		return out, nil
	}
	num := func(lo, hi uint64) (uint64, error) {
		if err := want('n'); err != nil {
			return 0, err
		}
		if v.n < lo || v.n > hi {
			return 0, bad("%d is out of range [%d, %d]", v.n, lo, hi)
		}
		return v.n, nil
	}
	var err error
	switch key {
	case "name":
		if err = want('s'); err == nil && !ValidName(v.s) {
			err = bad("%q is not a valid name (1-64 printable characters, no spaces or '/')", v.s)
		}
		c.Name = v.s
	case "memory":
		c.MemoryMiB, err = num(1, MaxMemoryMiB)
	case "cmd":
		if err = want('s'); err == nil && (v.s == "" || strings.IndexByte(v.s, 0) >= 0) {
			err = bad("must be a program path")
		}
		c.Cmd = v.s
	case "args":
		c.Args, err = strs()
	case "env":
		c.Env, err = strs()
		for _, e := range c.Env {
			if k, _, ok := strings.Cut(e, "="); !ok || k == "" {
				return bad("%q is not NAME=VALUE", e)
			}
		}
	case "on_crash":
		if err = want('s'); err == nil && v.s != OnCrashDestroy && v.s != OnCrashRestart {
			err = bad("%q: want %q or %q", v.s, OnCrashDestroy, OnCrashRestart)
		}
		c.OnCrash = v.s
	case "uuid":
		if err = want('s'); err == nil && !validUUID(v.s) {
			err = bad("%q is not a UUID", v.s)
		}
		c.UUID = strings.ToLower(v.s)
	case "vcpus":
		var n uint64
		n, err = num(1, 512)
		c.VCPUs = int(n)
	case "pids":
		var n uint64
		n, err = num(1, MaxPids)
		c.Pids = int(n)
	case "disks", "disk":
		if c.Disks, err = strs(); err == nil {
			if e := checkDisks(c.Disks); e != nil {
				err = bad("%v", e)
			}
		}
	case "vchans", "vchan":
		c.Vchans, err = strs()
	case "grant_frames", "max_grant_frames":
		var n uint64
		n, err = num(1, 64)
		c.GrantFrames = int(n)
	case "max_event_channels":
		var n uint64
		n, err = num(1, 4095)
		c.MaxEventChannels = int(n)
	case "max_maps", "max_maptrack_frames":
		var n uint64
		n, err = num(1, 1<<16)
		c.MaxMaps = int(n)
	case "xen_libs":
		var n uint64
		n, err = num(0, 1)
		c.XenLibs = n == 1
	case "console":
		if err = want('s'); err == nil && v.s != ConsolePTY && v.s != ConsoleDirect {
			err = bad("%q: want %q or %q", v.s, ConsolePTY, ConsoleDirect)
		}
		c.Console = v.s
	case "console_backend":
		if err = want('s'); err == nil && !ValidName(v.s) {
			err = bad("%q is not a host name", v.s)
		}
		c.ConsoleBackend = v.s
	case "console_log":
		if err = want('s'); err == nil && (!strings.HasPrefix(v.s, "/") || strings.IndexByte(v.s, 0) >= 0) {
			err = bad("%q: want an absolute path", v.s)
		}
		c.ConsoleLog = v.s
	default:
		return bad("unknown key")
	}
	return err
}

// ValidName reports whether s may name a domain: 1-64 printable
// characters without spaces or '/' (it appears in XenStore paths and on
// command lines), and not all digits (so a DOM argument is unambiguous).
func ValidName(s string) bool {
	if s == "" || len(s) > 64 || !utf8.ValidString(s) {
		return false
	}
	digits := true
	for _, r := range s {
		if r < 0x21 || r == 0x7f || r == '/' || (r >= 0x80 && r < 0xa0) {
			return false
		}
		if r < '0' || r > '9' {
			digits = false
		}
	}
	return !digits
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}

type keyValue struct {
	key string
	val value
}

// parser is a small recursive-descent parser of libxlu's config syntax.
type parser struct {
	src  string
	pos  int
	line int
}

func (p *parser) errf(format string, args ...any) error {
	return &ConfigError{p.line, fmt.Sprintf(format, args...)}
}

// skip passes blanks and comments; newlines too if nl.
func (p *parser) skip(nl bool) {
	for p.pos < len(p.src) {
		switch c := p.src[p.pos]; {
		case c == ' ' || c == '\t' || c == '\r':
			p.pos++
		case c == '#':
			for p.pos < len(p.src) && p.src[p.pos] != '\n' {
				p.pos++
			}
		case c == '\n' && nl:
			p.pos++
			p.line++
		default:
			return
		}
	}
}

func (p *parser) peek() byte {
	if p.pos < len(p.src) {
		return p.src[p.pos]
	}
	return 0
}

func (p *parser) file() ([]keyValue, error) {
	var out []keyValue
	for {
		p.skip(true)
		if p.pos >= len(p.src) {
			return out, nil
		}
		if p.peek() == ';' {
			p.pos++
			continue
		}
		key := p.ident()
		if key == "" {
			return nil, p.errf("want a key, got %q", p.rest())
		}
		p.skip(false)
		if p.peek() == '+' {
			return nil, p.errf("%q: '+=' is not supported", key)
		}
		if p.peek() != '=' {
			return nil, p.errf("want '=' after %q, got %q", key, p.rest())
		}
		p.pos++
		p.skip(false)
		v, err := p.value(0)
		if err != nil {
			return nil, err
		}
		out = append(out, keyValue{key, v})
		p.skip(false)
		switch p.peek() {
		case 0, '\n', ';':
		default:
			return nil, p.errf("unexpected %q after the value of %q", p.rest(), key)
		}
	}
}

// rest is a short excerpt of what follows, for messages.
func (p *parser) rest() string {
	r := p.src[p.pos:]
	if i := strings.IndexByte(r, '\n'); i >= 0 {
		r = r[:i]
	}
	if len(r) > 20 {
		r = r[:20] + "..."
	}
	return r
}

func isIdent(c byte, first bool) bool {
	return c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (!first && c >= '0' && c <= '9')
}

func (p *parser) ident() string {
	start := p.pos
	for p.pos < len(p.src) && isIdent(p.src[p.pos], p.pos == start) {
		p.pos++
	}
	return p.src[start:p.pos]
}

func (p *parser) value(depth int) (value, error) {
	v := value{line: p.line}
	switch c := p.peek(); {
	case c == '"' || c == '\'':
		s, err := p.str(c)
		v.kind, v.s = 's', s
		return v, err
	case c >= '0' && c <= '9':
		n, err := p.num()
		v.kind, v.n = 'n', n
		return v, err
	case c == '[':
		if depth > 0 {
			return v, p.errf("lists cannot nest")
		}
		p.pos++
		v.kind = 'l'
		for {
			p.skip(true)
			if p.peek() == ']' {
				p.pos++
				return v, nil
			}
			e, err := p.value(depth + 1)
			if err != nil {
				return v, err
			}
			if len(v.list) >= maxListLen {
				return v, p.errf("list longer than %d", maxListLen)
			}
			v.list = append(v.list, e)
			p.skip(true)
			switch p.peek() {
			case ',':
				p.pos++
			case ']':
			case 0:
				return v, p.errf("list not closed")
			default:
				return v, p.errf("want ',' or ']' in a list, got %q", p.rest())
			}
		}
	case c == 0 && depth > 0:
		return v, p.errf("list not closed")
	case c == 0 || c == '\n' || c == ';':
		return v, p.errf("missing value")
	}
	return v, p.errf("want a value (\"string\", number or [list]), got %q", p.rest())
}

func (p *parser) num() (uint64, error) {
	start := p.pos
	for p.pos < len(p.src) && isIdent(p.src[p.pos], false) {
		p.pos++
	}
	n, err := strconv.ParseUint(p.src[start:p.pos], 0, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && ne.Err == strconv.ErrRange {
			return 0, p.errf("number %s is too large", p.src[start:p.pos])
		}
		return 0, p.errf("bad number %q", p.src[start:p.pos])
	}
	return n, nil
}

func (p *parser) str(q byte) (string, error) {
	p.pos++
	var b strings.Builder
	for {
		if p.pos >= len(p.src) || p.src[p.pos] == '\n' {
			return "", p.errf("string not closed")
		}
		c := p.src[p.pos]
		p.pos++
		switch c {
		case q:
			return b.String(), nil
		case '\\':
			if p.pos >= len(p.src) {
				return "", p.errf("string not closed")
			}
			e := p.src[p.pos]
			p.pos++
			switch e {
			case 'n':
				b.WriteByte('\n')
			case 't':
				b.WriteByte('\t')
			case 'r':
				b.WriteByte('\r')
			case '\\', '"', '\'':
				b.WriteByte(e)
			case 'x':
				if p.pos+2 > len(p.src) {
					return "", p.errf("bad \\x escape")
				}
				n, err := strconv.ParseUint(p.src[p.pos:p.pos+2], 16, 8)
				if err != nil {
					return "", p.errf("bad \\x escape")
				}
				b.WriteByte(byte(n))
				p.pos += 2
			default:
				return "", p.errf("unknown escape \\%c", e)
			}
		default:
			b.WriteByte(c)
		}
	}
}
