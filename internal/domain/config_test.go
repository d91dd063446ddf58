package domain

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseConfig(t *testing.T) {
	src := `# a domain
name = "web"   # its name
memory = 0x40
cmd = '/bin/server'; on_crash = "restart"
args = [ "-port", "80",
         'x\ty\x41\\',   # trailing comma allowed
]
env = ["A=1", "B=="]
uuid = "6F9619FF-8B86-D011-B42D-00CF4FC964FF"
vcpus = 2
disks = [ "format=raw, vdev=xvda, target=/d.img" ]
vchans = []
grant_frames = 8
`
	c, err := ParseConfig(src)
	if err != nil {
		t.Fatal(err)
	}
	want := &Config{Name: "web", MemoryMiB: 64, Cmd: "/bin/server", OnCrash: "restart",
		Args: []string{"-port", "80", "x\tyA\\"}, Env: []string{"A=1", "B=="},
		UUID: "6f9619ff-8b86-d011-b42d-00cf4fc964ff", VCPUs: 2,
		Disks: []string{"format=raw, vdev=xvda, target=/d.img"}, GrantFrames: 8}
	if d := cmp.Diff(want, c); d != "" {
		t.Fatalf("(-want +got)\n%s", d)
	}
	min, err := ParseConfig("name='a'\ncmd='b'")
	if err != nil || min.MemoryMiB != DefaultMemoryMiB || min.OnCrash != OnCrashDestroy {
		t.Fatalf("defaults: %+v %v", min, err)
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct{ src, want string }{
		{`cmd = "x"`, `"name" is required`},
		{`name = "x"`, `"cmd" is required`},
		{"name = 'x'\ncmd='y'\nmemory = \"64\"", `line 3: "memory": want a number, got a string`},
		{"name = 'x'\ncmd='y'\nmemroy = 64", `line 3: "memroy": unknown key`},
		{"name = 'a b'\ncmd='y'", `not a valid name`},
		{"name = '123'\ncmd='y'", `not a valid name`},
		{"name = 'x'\nname = 'y'\ncmd='y'", `line 2: "name" set again (first on line 1)`},
		{"name = 'x\ncmd='y'", `line 1: string not closed`},
		{"name = 'x'\ncmd='y'\nargs = [1]", `want a list of strings, got a number`},
		{"name = 'x'\ncmd='y'\nargs = ['a' 'b']", `want ',' or ']'`},
		{"name = 'x'\ncmd='y'\nargs = ['a',", `list not closed`},
		{"name = 'x'\ncmd='y'\nargs = [['a']]", `lists cannot nest`},
		{"name = 'x'\ncmd='y'\nmemory = 0", `out of range`},
		{"name = 'x'\ncmd='y'\nmemory = 99999999999999999999999", `too large`},
		{"name = 'x'\ncmd='y'\nmemory = 12ab", `bad number`},
		{"name = 'x'\ncmd='y'\non_crash = 'reboot'", `want "destroy" or "restart"`},
		{"name = 'x'\ncmd='y'\nenv = ['NOVALUE']", `not NAME=VALUE`},
		{"name = 'x'\ncmd='y'\nuuid = 'nope'", `not a UUID`},
		{"name = 'x' cmd='y'", `unexpected "cmd='y'"`},
		{"name 'x'", `want '=' after "name"`},
		{"= 'x'", `want a key`},
		{"name = ", `missing value`},
		{"name += 'x'", `'+=' is not supported`},
		{"name = 'x\\q'", `unknown escape`},
		{"name = \xff", `not UTF-8`},
	} {
		_, err := ParseConfig(tc.src)
		var ce *ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: got %v, want an error with %q", tc.src, err, tc.want)
		}
	}
}

// FuzzParseConfig: any text parses or fails with a ConfigError, never
// panics, and a parsed config satisfies the checks.
func FuzzParseConfig(f *testing.F) {
	f.Add("name = 'web'\ncmd = '/bin/x'\nargs = ['a', \"b\\n\"]\nmemory = 0x10 # c\n")
	f.Add("name='a';cmd='b';env=['X=1'];on_crash='restart';vchans=[]")
	f.Add("[[[")
	f.Fuzz(func(t *testing.T, src string) {
		c, err := ParseConfig(src)
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if !ValidName(c.Name) || c.Cmd == "" || c.MemoryMiB < 1 || c.MemoryMiB > MaxMemoryMiB ||
			(c.OnCrash != OnCrashDestroy && c.OnCrash != OnCrashRestart) {
			t.Fatalf("accepted a bad config: %+v", c)
		}
	})
}
