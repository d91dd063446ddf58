package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"shi/api"
	"shi/guest/xs"
)

// shi xenstore MODE ... behaves like Debian's xenstore-MODE tools (Xen 4.17's
// xenstore_client.c): the same options, output, messages and exit codes,
// so scripts written for one work with the other. Messages carry the name
// the Xen tool would print ("xenstore-read: couldn't read path /x"). mkdir
// is ours: Xen 4.17 ships no xenstore-mkdir.

func init() {
	register("xenstore", "read and change XenStore like xenstore-*: read|write|ls|list|exists|rm|mkdir|chmod|watch", runXenstore)
}

type xsMode struct {
	usage string // after "Usage: shi xenstore MODE "
	opts  string // short options allowed besides h and s
	// transaction reports whether the mode wraps its work in one
	// transaction, given the number of arguments after the options.
	transaction func(nargs int) bool
}

var xsModes = map[string]xsMode{
	"read":   {"[-h] [-p] [-s] [-R] key [...]", "pR", func(n int) bool { return n > 1 }},
	"write":  {"[-h] [-s] [-R] key value [...]", "R", func(n int) bool { return n > 2 }},
	"rm":     {"[-h] [-s] [-t] key [...]", "t", always},
	"exists": {"[-h] [-p] [-s] key [...]", "", always},
	"list":   {"[-h] [-p] [-s] key [...]", "p", always},
	"ls":     {"[-h] [-f] [-p] [-s] [path]", "fp", never},
	"chmod":  {"[-h] [-u] [-r] [-s] key <mode [modes...]>", "ur", always},
	"watch":  {"[-h] [-n NR] key", "n", never},
	"mkdir":  {"[-h] [-s] key [...]", "", always},
}

func always(int) bool { return true }
func never(int) bool  { return false }

// xsRun is one invocation: its mode, options and streams.
type xsRun struct {
	env        *Env
	mode       string
	prog       string // the Xen tool's name, for messages
	prefix     bool   // -p
	raw        bool   // -R
	flat       bool   // -f
	tidy       bool   // -t
	upto       bool   // -u
	recurse    bool   // -r
	nrWatches  int    // -n, -1 = forever
	args       []string
	out        bytes.Buffer // read, list: printed once the transaction ends
	lsMaxWidth int
}

// xsExit ends a run early with a status, like err(3)/errx(3) in the C tool.
type xsExit int

func runXenstore(ctx context.Context, env *Env, args []string) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		fmt.Fprintln(env.Stderr, "xenstore: Usage: shi xenstore <mode> [-h] [...]")
		fmt.Fprintln(env.Stderr, "modes: read write rm exists list ls chmod watch mkdir (as Xen's xenstore-<mode>)")
		if len(args) == 0 {
			return 1
		}
		return 0
	}
	mode, ok := xsModes[args[0]]
	if !ok {
		fmt.Fprintf(env.Stderr, "xenstore: unknown mode %s\n", args[0])
		return 1
	}
	r := &xsRun{env: env, mode: args[0], prog: "xenstore-" + args[0], nrWatches: -1, lsMaxWidth: 80}
	code := r.main(ctx, mode, args[1:])
	return int(code)
}

func (r *xsRun) warnx(format string, a ...any) {
	fmt.Fprintf(r.env.Stderr, r.prog+": "+format+"\n", a...)
}

func (r *xsRun) usage(mode xsMode) xsExit {
	r.warnx("Usage: shi xenstore %s %s", r.mode, mode.usage)
	return 1
}

func (r *xsRun) main(ctx context.Context, mode xsMode, argv []string) (code xsExit) {
	if code, ok := r.parse(mode, argv); !ok {
		return code
	}
	switch {
	case r.mode == "ls":
	case r.mode == "write" && len(r.args)%2 == 1, len(r.args) == 0:
		return r.usage(mode)
	}
	if r.mode == "ls" {
		if f, ok := r.env.Stdout.(*os.File); ok {
			if ws, err := unix.IoctlGetWinsize(int(f.Fd()), unix.TIOCGWINSZ); err == nil && ws.Col > 0 {
				r.lsMaxWidth = int(ws.Col) - 2
			}
		}
	}
	c, err := openXenstore(ctx, r.env)
	if err != nil {
		r.warnx("xs_open: %v", err)
		return 1
	}
	defer c.Close()
	defer func() {
		if e := recover(); e != nil {
			x, ok := e.(xsExit)
			if !ok {
				panic(e)
			}
			code = x
		}
	}()
	if r.mode == "watch" {
		return r.watch(ctx, c)
	}
	if !mode.transaction(len(r.args)) {
		code := r.perform(c)
		r.env.Stdout.Write(r.out.Bytes())
		return code
	}
	for {
		tx, err := c.TransactionStart()
		if err != nil {
			r.warnx("couldn't start transaction")
			return 1
		}
		code := r.perform(tx)
		err = c.TransactionEnd(tx.ID(), code == 0)
		if err == syscall.EAGAIN && code == 0 {
			r.out.Reset()
			continue
		}
		if err != nil {
			r.warnx("couldn't end transaction")
			return 1
		}
		r.env.Stdout.Write(r.out.Bytes())
		return code
	}
}

// parse reads options the way getopt_long does (options may come after
// operands, "--" ends them, short options may be grouped). It returns
// false when the run is over (usage or -h).
func (r *xsRun) parse(mode xsMode, argv []string) (xsExit, bool) {
	long := map[string]byte{"help": 'h', "flat": 'f', "socket": 's', "prefix": 'p', "tidy": 't',
		"upto": 'u', "recurse": 'r', "number": 'n', "raw": 'R'}
	allowed := "hs" + mode.opts
	for i := 0; i < len(argv); i++ {
		a := argv[i]
		if a == "--" {
			r.args = append(r.args, argv[i+1:]...)
			break
		}
		if len(a) < 2 || a[0] != '-' {
			r.args = append(r.args, a)
			continue
		}
		var opts []byte
		var optarg *string
		if strings.HasPrefix(a, "--") {
			name, val, hasVal := strings.Cut(a[2:], "=")
			o, ok := long[name]
			if !ok {
				r.warnx("unrecognized option '%s'", a)
				continue
			}
			if hasVal {
				optarg = &val
			}
			opts = []byte{o}
		} else {
			opts = []byte(a[1:])
		}
		for j := 0; j < len(opts); j++ {
			o := opts[j]
			if !strings.ContainsRune("hfspturn:R", rune(o)) || o == ':' {
				r.warnx("invalid option -- '%c'", o)
				continue
			}
			if !strings.ContainsRune(allowed, rune(o)) {
				return r.usage(mode), false
			}
			switch o {
			case 'h':
				return r.usage(mode), false
			case 's': // socket only: the only kind of connection we have
			case 'p':
				r.prefix = true
			case 'R':
				r.raw = true
			case 'f':
				r.flat = true
			case 't':
				r.tidy = true
			case 'u':
				r.upto = true
			case 'r':
				r.recurse = true
			case 'n':
				switch {
				case optarg != nil:
				case j+1 < len(opts):
					s := string(opts[j+1:])
					optarg = &s
				case i+1 < len(argv):
					i++
					optarg = &argv[i]
				default:
					r.warnx("option requires an argument -- 'n'")
					return r.usage(mode), false
				}
				r.nrWatches = atoi(*optarg)
				j = len(opts)
			}
		}
	}
	return 0, true
}

func (r *xsRun) perform(s xs.Store) xsExit {
	if r.mode == "ls" {
		paths := r.args
		if len(paths) == 0 {
			paths = []string{"/"}
		}
		for _, p := range paths {
			r.ls(s, p, 0)
		}
		return 0
	}
	for i := 0; i < len(r.args); i++ {
		key := r.args[i]
		switch r.mode {
		case "read":
			v, err := s.Read(key)
			if err != nil {
				r.warnx("couldn't read path %s", key)
				return 1
			}
			if r.prefix {
				fmt.Fprintf(&r.out, "%s: ", key)
			}
			if r.raw {
				r.out.Write(v)
			} else {
				r.out.WriteString(sanitise(v) + "\n")
			}
		case "write":
			v := []byte(r.args[i+1])
			if !r.raw {
				v = unsanitise(r.args[i+1])
			}
			i++
			if err := s.Write(key, v); err != nil {
				r.warnx("could not write path %s", key)
				return 1
			}
		case "mkdir":
			if err := s.Mkdir(key); err != nil {
				r.warnx("could not create path %s", key)
				return 1
			}
		case "rm":
			if code := r.rm(s, key); code != 0 {
				return code
			}
		case "exists":
			if _, err := s.Read(key); err != nil {
				return 1
			}
		case "list":
			names, err := s.Directory(key)
			if err != nil {
				r.warnx("could not list path %s", key)
				return 1
			}
			for _, n := range names {
				if r.prefix {
					// Xen 4.17 prints "//name" for the root; so do we.
					fmt.Fprintf(&r.out, "%s/", key)
				}
				r.out.WriteString(n + "\n")
			}
		case "chmod":
			perms := make([]xs.Perm, 0, len(r.args)-i-1)
			for _, a := range r.args[i+1:] {
				p := xs.Perm{Domid: uint32(atoi(a[1:]))}
				switch a[0] {
				case 'n':
					p.Access = xs.AccessNone
				case 'r':
					p.Access = xs.AccessRead
				case 'w':
					p.Access = xs.AccessWrite
				case 'b':
					p.Access = xs.AccessBoth
				default:
					r.warnx("Invalid permission specification: '%c'", a[0])
					panic(xsExit(1))
				}
				perms = append(perms, p)
			}
			r.chmod(s, key, perms, r.upto, r.recurse)
			return 0
		}
	}
	return 0
}

// rm removes key; with -t it then removes each ancestor left without a
// value or children.
func (r *xsRun) rm(s xs.Store, key string) xsExit {
	for {
		if err := s.Rm(key); err != nil {
			r.warnx("could not remove path %s", key)
			return 1
		}
		i := strings.LastIndexByte(key, '/')
		if !r.tidy || i < 0 {
			return 0
		}
		key = key[:i]
		v, err := s.Read(key)
		if err != nil || len(v) != 0 {
			return 0
		}
		if names, err := s.Directory(key); err != nil || len(names) != 0 {
			return 0
		}
	}
}

func (r *xsRun) chmod(s xs.Store, path string, perms []xs.Perm, upto, recurse bool) {
	if path == "" {
		return
	}
	if err := s.SetPerms(path, perms...); err != nil {
		r.warnx("Error occurred setting permissions on '%s': %s", path, strerror(err))
		panic(xsExit(1))
	}
	if upto {
		i := strings.LastIndexByte(path, '/')
		if i < 0 {
			r.warnx("Unable to locate path separator '/' in '%s'", path)
			panic(xsExit(1))
		}
		r.chmod(s, path[:i], perms, true, false)
	}
	if recurse {
		names, err := s.Directory(path)
		if err != nil {
			return
		}
		for _, n := range names {
			r.chmod(s, path+"/"+n, perms, false, true)
		}
	}
}

// ls prints the tree below path as xenstore-ls does: one line per node,
// indented by depth, `name = "value"`, cut to the terminal's width (80
// columns when stdout is not a terminal), with -p a dotted leader and the
// permissions, with -f full paths and no cutting.
func (r *xsRun) ls(s xs.Store, path string, depth int) {
	w := r.env.Stdout
	names, err := s.Directory(path)
	if err != nil {
		if depth > 0 && err == syscall.ENOENT {
			return // removed while we walked
		}
		r.warnx("xs_directory (%s): %s", path, strerror(err))
		panic(xsExit(1))
	}
	const tag = ` = "..."`
	maxWidth, desired := r.lsMaxWidth, 60
	if r.flat {
		maxWidth, desired = math.MaxInt32/2, 0
	}
	sep := "/"
	if strings.HasSuffix(path, "/") {
		sep = ""
	}
	for _, name := range names {
		p := path + sep + name
		var line strings.Builder
		if r.flat {
			line.WriteString(p)
		} else {
			line.WriteString(strings.Repeat(" ", depth))
			line.WriteString(cut(name, maxWidth-len(tag)-depth))
		}
		width := line.Len()
		if r.flat {
			width = 0
		}
		v, err := s.Read(p)
		if err != nil {
			line.WriteString(":\n")
		} else if sv := sanitise(v); maxWidth < width+len(v)+len(tag) {
			fmt.Fprintf(&line, " = \"%s\\...\"", cut(sv, maxWidth-len(tag)-width))
		} else {
			n, _ := fmt.Fprintf(&line, " = \"%s\"", sv)
			width += n
			if r.prefix {
				line.WriteByte(' ')
				for width++; width < min(desired, maxWidth); width++ {
					line.WriteByte(" ."[width&1])
				}
			}
		}
		if r.prefix {
			if perms, err := s.GetPerms(p); err != nil {
				io.WriteString(w, line.String())
				line.Reset()
				r.warnx("\ncould not access permissions for %s: %s", name, strerror(err))
			} else {
				line.WriteString("  (")
				for i, pm := range perms {
					if i > 0 {
						line.WriteByte(',')
					}
					line.WriteString(pm.String())
				}
				line.WriteByte(')')
			}
		}
		line.WriteByte('\n')
		io.WriteString(w, line.String())
		r.ls(s, p, depth+1)
	}
}

func (r *xsRun) watch(ctx context.Context, c *xs.Client) xsExit {
	// Each watch's first event is the one the daemon fires when it is set;
	// taking those in order keeps the output in argument order, as the C
	// tool's single connection does.
	var first []xs.Event
	events := make(chan xs.Event)
	lost := make(chan struct{}, len(r.args)) // a watch ended with the connection
	for _, key := range r.args {
		w, err := c.Watch(key, key)
		if err != nil {
			r.warnx("Unable to add watch on %s\n", key)
			return 1
		}
		select {
		case ev, ok := <-w.Events():
			if ok {
				first = append(first, ev)
			}
		case <-ctx.Done():
			return 130
		}
		go func() {
			for ev := range w.Events() {
				select {
				case events <- ev:
				case <-ctx.Done():
					return
				}
			}
			lost <- struct{}{}
		}()
	}
	for n := 0; r.nrWatches < 0 || n < r.nrWatches; n++ {
		var ev xs.Event
		if n < len(first) {
			ev = first[n]
		} else {
			select {
			case ev = <-events:
			case <-lost:
				r.warnx("xs_read_watch: %v", c.Err())
				return 1
			case <-ctx.Done():
				return 130 // as a shell reports the C tool killed by SIGINT
			}
		}
		fmt.Fprintln(r.env.Stdout, ev.Path)
	}
	return 0
}

// openXenstore connects to the XenStore socket findXenstoreSocket finds.
// When nothing answers, the error says everything that was tried.
func openXenstore(ctx context.Context, env *Env) (*xs.Client, error) {
	p, from := findXenstoreSocket(ctx, env)
	c, err := xs.Open(p)
	switch {
	case err == nil:
		return c, nil
	case from == fromEnv:
		return nil, fmt.Errorf("%v (from %s)", err, api.EnvXenstore)
	case from == fromDefault:
		url := api.AgentURL(env.Getenv)
		return nil, fmt.Errorf("no XenStore answers: %v; %s is unset and no shi agent answers at %s (start one with 'shi agent -dev', or set %s or %s)",
			err, api.EnvXenstore, url, api.EnvXenstore, api.EnvAgent)
	}
	return nil, err
}

// strerror spells an errno as glibc does, for messages that mimic err(3).
func strerror(err error) string {
	var e syscall.Errno
	if !errors.As(err, &e) {
		return err.Error()
	}
	s := e.Error()
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}

// atoi is C's atoi: leading blanks, an optional sign, digits; 0 for junk.
func atoi(s string) int {
	s = strings.TrimLeft(s, " \t\n\v\f\r")
	end := 0
	if end < len(s) && (s[end] == '-' || s[end] == '+') {
		end++
	}
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, err := strconv.ParseInt(s[:end], 10, 32)
	if err != nil {
		return 0
	}
	return int(n)
}

// cut returns at most n bytes of s (printf's "%.*s").
func cut(s string, n int) string {
	if n < 0 {
		n = 0
	}
	if len(s) > n {
		return s[:n]
	}
	return s
}

// sanitise quotes a value for printing as xenstore_client.c does: printable
// ASCII stays, \t \n \r \\ are escaped, other bytes below 8 become \ooo and
// the rest \xhh.
func sanitise(v []byte) string {
	var b strings.Builder
	for _, c := range v {
		switch {
		case c >= ' ' && c <= '~' && c != '\\':
			b.WriteByte(c)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\\':
			b.WriteString(`\\`)
		case c < 010:
			fmt.Fprintf(&b, `\%03o`, c)
		default:
			fmt.Fprintf(&b, `\x%02x`, c)
		}
	}
	return b.String()
}

// unsanitise is the inverse for values given on the command line: \t \n \r
// \\, \xhh (up to two hex digits), \ooo (up to three octal digits); any
// other escaped character stands for itself, and a lone trailing backslash
// becomes a NUL byte, as in the C tool.
func unsanitise(s string) []byte {
	out := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c != '\\' {
			out = append(out, c)
			continue
		}
		i++
		if i == len(s) {
			out = append(out, 0)
			break
		}
		c = s[i]
		switch c {
		case 't':
			c = '\t'
		case 'n':
			c = '\n'
		case 'r':
			c = '\r'
		case 'x':
			v, n := 0, 0
			for n < 2 && i+1 < len(s) && isHex(s[i+1]) {
				v = v<<4 | hexVal(s[i+1])
				i++
				n++
			}
			if n > 0 {
				c = byte(v)
			}
		case '0', '1', '2', '3', '4', '5', '6', '7':
			v := int(c - '0')
			for n := 1; n < 3 && i+1 < len(s) && s[i+1] >= '0' && s[i+1] <= '7'; n++ {
				v = v<<3 | int(s[i+1]-'0')
				i++
			}
			c = byte(v)
		}
		out = append(out, c)
	}
	return out
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func hexVal(c byte) int {
	switch {
	case c <= '9':
		return int(c - '0')
	case c >= 'a':
		return int(c-'a') + 10
	}
	return int(c-'A') + 10
}
