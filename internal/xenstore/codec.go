package xenstore

import (
	"encoding/binary"
	"errors"
)

// Commands travel through the Raft log as bytes. The format is a version
// byte and then the fields in order, little-endian, strings and byte
// slices with a u32 length. Decode checks every length against what is
// left, so a corrupt entry is an error, never a panic or a huge allocation.

const codecVersion = 1

// ErrBadCommand reports an undecodable command.
var ErrBadCommand = errors.New("xenstore: malformed command")

// MarshalBinary encodes the command.
func (c *Command) MarshalBinary() ([]byte, error) {
	return c.appendTo([]byte{codecVersion}), nil
}

func (c *Command) appendTo(b []byte) []byte {
	b = append(b, byte(c.Op))
	b = binary.LittleEndian.AppendUint32(b, c.Dom)
	b = appendBytes(b, []byte(c.Path))
	b = appendBytes(b, c.Value)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Perms)))
	for _, p := range c.Perms {
		b = binary.LittleEndian.AppendUint32(b, p.Dom)
		b = append(b, p.Bits)
	}
	b = binary.LittleEndian.AppendUint32(b, c.Target)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Obs)))
	for _, o := range c.Obs {
		b = appendBytes(b, []byte(o.Path))
		present := byte(0)
		if o.Present {
			present = 1
		}
		b = append(b, o.Facets, present)
		for _, g := range [...]uint64{o.Created, o.VGen, o.PGen, o.CGen} {
			b = binary.LittleEndian.AppendUint64(b, g)
		}
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(c.Ops)))
	for i := range c.Ops {
		b = c.Ops[i].appendTo(b)
	}
	return b
}

func appendBytes(b, v []byte) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

// UnmarshalBinary decodes a command encoded by MarshalBinary.
func (c *Command) UnmarshalBinary(b []byte) error {
	if len(b) == 0 || b[0] != codecVersion {
		return ErrBadCommand
	}
	d := decoder{b: b[1:]}
	*c = d.command(0)
	if d.err != nil || len(d.b) != 0 {
		return ErrBadCommand
	}
	return nil
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() { d.err = ErrBadCommand; d.b = nil }

func (d *decoder) n(k int) []byte {
	if d.err != nil || k < 0 || len(d.b) < k {
		d.fail()
		return make([]byte, k&0xff) // zeros; the error is reported anyway
	}
	v := d.b[:k]
	d.b = d.b[k:]
	return v
}

func (d *decoder) u8() byte    { return d.n(1)[0] }
func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.n(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.n(8)) }

func (d *decoder) bytes() []byte {
	k := d.u32()
	if uint64(k) > uint64(len(d.b)) {
		d.fail()
		return nil
	}
	return append([]byte(nil), d.n(int(k))...)
}

// count reads a element count and checks that at least min bytes per
// element remain.
func (d *decoder) count(min int) int {
	k := d.u32()
	if uint64(k)*uint64(min) > uint64(len(d.b)) {
		d.fail()
		return 0
	}
	return int(k)
}

func (d *decoder) command(depth int) Command {
	var c Command
	c.Op = Op(d.u8())
	c.Dom = d.u32()
	c.Path = string(d.bytes())
	c.Value = d.bytes()
	if len(c.Value) == 0 {
		c.Value = nil
	}
	if k := d.count(5); k > 0 {
		c.Perms = make(Perms, k)
		for i := range c.Perms {
			c.Perms[i] = Perm{Dom: d.u32(), Bits: d.u8()}
		}
	}
	c.Target = d.u32()
	if k := d.count(4 + 2 + 32); k > 0 {
		c.Obs = make([]Observation, k)
		for i := range c.Obs {
			o := &c.Obs[i]
			o.Path = string(d.bytes())
			o.Facets = d.u8()
			o.Present = d.u8() == 1
			o.Created, o.VGen, o.PGen, o.CGen = d.u64(), d.u64(), d.u64(), d.u64()
		}
	}
	if k := d.count(1 + 4 + 4 + 4 + 4 + 4 + 4 + 4); k > 0 {
		if depth > 0 {
			d.fail()
			return c
		}
		c.Ops = make([]Command, k)
		for i := range c.Ops {
			c.Ops[i] = d.command(depth + 1)
		}
	}
	return c
}
