package membership

import (
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
)

// The gossip keyring: every installed key decrypts what others send, the
// primary encrypts what we send. A rotation installs a new key on every
// member, makes it primary everywhere, then removes the old one, so no
// member ever receives a message it cannot read.

// ErrNoEncryption means the cluster's gossip is not encrypted (no
// -encrypt at start), so there is no keyring to change.
var ErrNoEncryption = errors.New("membership: gossip is not encrypted (start the agents with -encrypt to have a keyring)")

// Keyring is this member's keys, base64 as -encrypt takes them.
type Keyring struct {
	Primary string   `json:"primary"`
	Keys    []string `json:"keys"`
}

// Keyring returns this member's keys.
func (m *Membership) Keyring() (Keyring, error) {
	kr := m.keyring
	if kr == nil {
		return Keyring{}, ErrNoEncryption
	}
	out := Keyring{Primary: base64.StdEncoding.EncodeToString(kr.GetPrimaryKey())}
	for _, k := range kr.GetKeys() {
		out.Keys = append(out.Keys, base64.StdEncoding.EncodeToString(k))
	}
	slices.Sort(out.Keys)
	return out, nil
}

// InstallKey adds key (base64) to the keyring: accepted at once, used
// for sending only after UseKey.
func (m *Membership) InstallKey(key string) error {
	return m.keyOp(key, func(k []byte) error { return m.keyring.AddKey(k) })
}

// UseKey makes an installed key the primary.
func (m *Membership) UseKey(key string) error {
	return m.keyOp(key, func(k []byte) error {
		if !slices.ContainsFunc(m.keyring.GetKeys(), func(x []byte) bool { return bytes.Equal(x, k) }) {
			return errors.New("membership: the key is not installed (install it first)")
		}
		return m.keyring.UseKey(k)
	})
}

// RemoveKey removes a key that is not the primary.
func (m *Membership) RemoveKey(key string) error {
	return m.keyOp(key, func(k []byte) error {
		kr := m.keyring
		if bytes.Equal(kr.GetPrimaryKey(), k) {
			return errors.New("membership: the key is the primary (use another one first)")
		}
		if !slices.ContainsFunc(kr.GetKeys(), func(x []byte) bool { return bytes.Equal(x, k) }) {
			return errors.New("membership: the key is not installed")
		}
		return kr.RemoveKey(k)
	})
}

func (m *Membership) keyOp(key string, op func([]byte) error) error {
	if m.keyring == nil {
		return ErrNoEncryption
	}
	k, err := ParseKey(key)
	if err != nil {
		return err
	}
	if err := op(k); err != nil {
		return fmt.Errorf("membership: keyring: %w", err)
	}
	return nil
}
