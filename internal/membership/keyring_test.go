package membership

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"time"
)

// TestKeyRotation rotates a running cluster's key the way shi keyring
// does (install everywhere, use everywhere, remove the old one) and
// checks that nobody is ever declared failed, and that afterwards only
// the new key gets in.
func TestKeyRotation(t *testing.T) {
	key1 := bytes.Repeat([]byte{1}, 32)
	key2 := bytes.Repeat([]byte{2}, 32)
	k1, k2 := base64.StdEncoding.EncodeToString(key1), base64.StdEncoding.EncodeToString(key2)
	a := startNode(t, "a", func(c *Config) { c.EncryptKey = key1 })
	b := startNode(t, "b", func(c *Config) { c.EncryptKey = key1 })
	if _, err := b.Join([]string{a.Addr()}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "a to see b", func() bool { return len(a.alive()) == 2 })

	both := []*node{a, b}
	step := func(what string, op func(*node) error) {
		t.Helper()
		for _, n := range both {
			if err := op(n); err != nil {
				t.Fatalf("%s on %s: %v", what, n.LocalName(), err)
			}
		}
		// A few probe rounds under the new keys: still all alive.
		time.Sleep(300 * time.Millisecond)
		for _, n := range both {
			if got := strings.Join(n.alive(), ","); got != "a,b" {
				t.Fatalf("after %s %s sees %s alive", what, n.LocalName(), got)
			}
		}
	}
	if err := a.UseKey(k2); err == nil {
		t.Fatal("a key not installed became the primary")
	}
	if err := a.RemoveKey(k1); err == nil {
		t.Fatal("the primary key was removed")
	}
	// Installed on a only: a still sends with key 1, which b reads.
	step("install on a", func(n *node) error {
		if n == a {
			return n.InstallKey(k2)
		}
		return nil
	})
	step("install", func(n *node) error { return n.InstallKey(k2) })
	step("use", func(n *node) error { return n.UseKey(k2) })
	step("remove", func(n *node) error { return n.RemoveKey(k1) })
	for _, n := range both {
		kr, err := n.Keyring()
		if err != nil || kr.Primary != k2 || len(kr.Keys) != 1 {
			t.Fatalf("%s's keyring: %+v %v", n.LocalName(), kr, err)
		}
	}
	for _, n := range both {
		n.mu.Lock()
		for _, e := range n.events {
			if e.Type == EventFailed {
				t.Errorf("%s saw %s fail during the rotation", n.LocalName(), e.Member.Name)
			}
		}
		n.mu.Unlock()
	}

	old := startNode(t, "old", func(c *Config) { c.EncryptKey = key1 })
	if _, err := old.Join([]string{a.Addr()}); err == nil {
		t.Fatal("a host with the removed key joined")
	}
	c := startNode(t, "c", func(c *Config) { c.EncryptKey = key2 })
	if _, err := c.Join([]string{a.Addr()}); err != nil {
		t.Fatalf("a host with the new key: %v", err)
	}

	plain := startNode(t, "plain", nil)
	if _, err := plain.Keyring(); err != ErrNoEncryption {
		t.Fatalf("keyring without encryption: %v", err)
	}
	if err := plain.InstallKey(k2); err != ErrNoEncryption {
		t.Fatalf("install without encryption: %v", err)
	}
	if err := a.InstallKey("not base64"); err == nil {
		t.Fatal("a bad key was installed")
	}
}
