package cli

import (
	"slices"
	"testing"

	"shi/api"
)

func TestTakeToken(t *testing.T) {
	base := &Env{Getenv: func(k string) string {
		if k == api.EnvToken {
			return "from-env"
		}
		return ""
	}}
	for _, c := range []struct {
		args []string
		rest []string
		tok  string
	}{
		{[]string{"list"}, []string{"list"}, "from-env"},
		{[]string{"-token", "T1", "list"}, []string{"list"}, "T1"},
		{[]string{"list", "-token=T2", "-json"}, []string{"list", "-json"}, "T2"},
		{[]string{"destroy", "--token", "T3", "web"}, []string{"destroy", "web"}, "T3"},
		{[]string{"xenstore", "write", "--", "-token", "x"}, []string{"xenstore", "write", "--", "-token", "x"}, "from-env"},
		// A domain's program's arguments pass through the console helper.
		{[]string{"console-helper", "/bin/prog", "-token", "x"}, []string{"console-helper", "/bin/prog", "-token", "x"}, "from-env"},
		{[]string{"list", "-tokens"}, []string{"list", "-tokens"}, "from-env"},
	} {
		env, rest, err := takeToken(base, c.args)
		if err != nil || !slices.Equal(rest, c.rest) || env.Getenv(api.EnvToken) != c.tok {
			t.Errorf("takeToken(%q) = %q, token %q, %v; want %q, %q", c.args, rest, env.Getenv(api.EnvToken), err, c.rest, c.tok)
		}
	}
	if _, _, err := takeToken(base, []string{"list", "-token"}); err == nil {
		t.Error("-token without a value was taken")
	}
}
