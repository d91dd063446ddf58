package directory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"testing"

	"shi/internal/xenstore"
)

func tok(id, name, secret string, ro bool) Token {
	return Token{ID: id, Name: name, Hash: HashSecret(secret), ReadOnly: ro, Created: 1}
}

func mustApply(t *testing.T, f *FSM, i uint64, c AuthCmd) Response {
	t.Helper()
	e := AuthEntry(c)
	if err := ValidEntry(e); err != nil {
		t.Fatalf("ValidEntry(%+v): %v", c, err)
	}
	return f.Apply(i, e)
}

func TestAuthTable(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	if _, ok := f.TokenBySecret("s1"); ok || f.IsAgentSecret("") || f.AgentSecret() != "" {
		t.Fatal("a fresh table knows a token")
	}
	r := mustApply(t, f, 1, AuthCmd{Op: AuthBootstrap, AgentSecret: "agent", Token: tok("a1", "bootstrap", "s1", false)})
	if r.Err != "" {
		t.Fatalf("bootstrap: %s", r.Err)
	}
	// Once per cluster: a second leader's bootstrap changes nothing.
	r = mustApply(t, f, 2, AuthCmd{Op: AuthBootstrap, AgentSecret: "other", Token: tok("a2", "again", "s2", false)})
	if r.Err != ErrBootstrapped.Error() || !f.IsAgentSecret("agent") || f.IsAgentSecret("other") {
		t.Fatalf("second bootstrap: %q, agent secret %q", r.Err, f.AgentSecret())
	}
	if got, ok := f.TokenBySecret("s1"); !ok || got.Name != "bootstrap" || got.ReadOnly {
		t.Fatalf("bootstrap token: %+v %v", got, ok)
	}
	if _, ok := f.TokenBySecret("s2"); ok {
		t.Fatal("the refused bootstrap's token was added")
	}
	if r = mustApply(t, f, 3, AuthCmd{Op: AuthCreate, Token: tok("r1", "reader", "s3", true)}); r.Err != "" {
		t.Fatalf("create: %s", r.Err)
	}
	for _, c := range []AuthCmd{
		{Op: AuthCreate, Token: tok("r2", "reader", "s4", true)},   // name taken
		{Op: AuthCreate, Token: tok("r3", "reader2", "s3", true)},  // same secret
		{Op: AuthCreate, Token: tok("r1", "reader3", "s5", false)}, // id taken
	} {
		if r = mustApply(t, f, 4, c); r.Err != ErrTokenExists.Error() {
			t.Fatalf("create %+v: %q, want %q", c, r.Err, ErrTokenExists)
		}
	}
	// Ensure: the same secret again is fine (every agent given the file).
	if r = mustApply(t, f, 5, AuthCmd{Op: AuthCreate, Ensure: true, Token: tok("zz", "file", "s1", false)}); r.Err != "" || len(f.Tokens()) != 2 {
		t.Fatalf("ensure: %q, %d tokens", r.Err, len(f.Tokens()))
	}
	for _, c := range []AuthCmd{
		{Op: AuthCreate, Token: Token{ID: "x", Name: "bad", Hash: "zz"}},
		{Op: AuthCreate, Token: Token{ID: "", Name: "bad", Hash: HashSecret("q")}},
		{Op: AuthCreate, Token: Token{ID: "x", Name: "a/b", Hash: HashSecret("q")}},
		{Op: AuthBootstrap},
	} {
		if r = f.Apply(6, AuthEntry(c)); r.Err == "" {
			t.Fatalf("%+v accepted", c)
		}
	}
	// A snapshot keeps the table.
	var buf bytes.Buffer
	if err := f.Snapshot().Persist(&buf); err != nil {
		t.Fatal(err)
	}
	g, err := ReadSnapshot(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if !g.IsAgentSecret("agent") || len(g.Tokens()) != 2 {
		t.Fatalf("restored: agent %q, tokens %+v", g.AgentSecret(), g.Tokens())
	}
	if got, ok := g.TokenBySecret("s3"); !ok || !got.ReadOnly || got.Name != "reader" {
		t.Fatalf("restored reader: %+v %v", got, ok)
	}
	// Delete by name or id.
	if r = mustApply(t, f, 7, AuthCmd{Op: AuthDelete, Token: Token{ID: "reader"}}); r.Err != "" {
		t.Fatalf("delete by name: %s", r.Err)
	}
	if r = mustApply(t, f, 8, AuthCmd{Op: AuthDelete, Token: Token{ID: "a1"}}); r.Err != "" {
		t.Fatalf("delete by id: %s", r.Err)
	}
	if _, ok := f.TokenBySecret("s3"); ok || len(f.Tokens()) != 0 {
		t.Fatalf("deleted tokens remain: %+v", f.Tokens())
	}
	if r = mustApply(t, f, 9, AuthCmd{Op: AuthDelete, Token: Token{ID: "a1"}}); r.Err != ErrNoSuchToken.Error() {
		t.Fatalf("delete again: %q", r.Err)
	}
	// The snapshot taken before the deletes still has them: tables are
	// shared, never changed in place.
	if len(g.Tokens()) != 2 {
		t.Fatal("a delete changed an earlier snapshot")
	}
}

// TestSnapshotV1 restores a snapshot written before the auth table: no
// tokens, not an error.
func TestSnapshotV1(t *testing.T) {
	f := NewFSM(xenstore.DefaultQuota())
	f.Apply(1, DomainEntry(DomainCmd{Op: DomCreate, Domain: Domain{Name: "x", Host: "h"}}))
	doms, _ := json.Marshal(f.Domains())
	var b []byte
	b = append(b, dirMagicV1[:]...)
	b = binary.LittleEndian.AppendUint64(b, 1)
	b = binary.LittleEndian.AppendUint32(b, f.doms.next)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(doms)))
	b = append(b, doms...)
	var xs bytes.Buffer
	f.State().WriteTo(&xs)
	b = append(b, xs.Bytes()...)
	g, err := ReadSnapshot(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if len(g.Domains()) != 1 || len(g.Tokens()) != 0 || g.AgentSecret() != "" {
		t.Fatalf("v1 restore: %+v %+v", g.Domains(), g.Tokens())
	}
}

// FuzzAuthEntry feeds arbitrary auth commands: no panic, and a state
// that took them snapshots and restores.
func FuzzAuthEntry(f *testing.F) {
	f.Add([]byte(`{"op":"bootstrap","agent_secret":"a","token":{"id":"1","name":"b","hash":"` + HashSecret("x") + `"}}`))
	f.Add([]byte(`{"op":"create","ensure":true,"token":{"id":"1","name":"b","hash":"` + HashSecret("x") + `"}}`))
	f.Add([]byte(`{"op":"delete","token":{"id":"b"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e := append([]byte{entryAuth | flagIgnorable}, b...)
		m := NewFSM(xenstore.DefaultQuota())
		m.Apply(1, AuthEntry(AuthCmd{Op: AuthBootstrap, AgentSecret: "s", Token: tok("i", "n", "x", false)}))
		if ValidEntry(e) != nil {
			return
		}
		m.Apply(2, e)
		m.Apply(3, e)
		var buf bytes.Buffer
		if err := m.Snapshot().Persist(&buf); err != nil {
			t.Fatal(err)
		}
		g, err := ReadSnapshot(&buf)
		if err != nil {
			t.Fatalf("own snapshot rejected: %v", err)
		}
		if len(g.Tokens()) != len(m.Tokens()) {
			t.Fatalf("restored %d tokens of %d", len(g.Tokens()), len(m.Tokens()))
		}
	})
}
