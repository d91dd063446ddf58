// Package abi holds Xen's byte layouts and constants, spelled as Xen spells
// them so that grep finds both the C headers and this code. It is data with
// (de)serialisation helpers and no behaviour; see spec/xen-abi.md.
package abi
