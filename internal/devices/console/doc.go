// Package console is the PV console of a shi domain (spec/xen-abi.md §5):
// a struct xencons_interface page the domain grants to its console back
// end, an event channel between the two, and the keys under
// /local/domain/<id>/console that say where they are.
//
// Front is the domain's end: it shares the page, allocates the port,
// publishes ring-ref and port, writes output into out[] and reads
// keystrokes from in[]. RunHelper is the small program a plain domain
// runs first: it joins a pseudo-terminal to a Front and starts the
// domain's command on the terminal's slave side.
//
// Back is the back end's end of one console, and Service runs every
// console a driver domain serves: it watches the driver's back-end
// directory (/local/domain/<driver>/backend/console/<dom>/0), connects to
// each front end, and keeps a Log per console: a bounded scrollback with
// byte offsets, an optional transcript file, and the viewers (many
// readers, at most one writer).
//
// Built only on guest/ (DESIGN.md §2): the back end is a domain like any
// other, so a front end on one host and its back end on another work
// through the memory model of docs/memory-model.md. Both ends declare the
// page Explicit and report what they write, and read the rings under
// evtchn.Handle.View.
//
// Flow control is the ring's: a back end that cannot keep up simply
// leaves out[] full, and the domain's writes block there. The back end
// never buffers more than the scrollback, whatever a domain writes, and a
// slow viewer loses its place (it is told where the stream resumes)
// rather than holding the console up.
package console
