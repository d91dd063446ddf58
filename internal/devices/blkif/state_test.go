package blkif

import (
	"context"
	"errors"
	"testing"
	"time"

	"shi/guest/xs"
	"shi/guest/xs/xstest"
)

func TestWaitState(t *testing.T) {
	srv := xstest.NewServer()
	defer srv.Close()
	nc, err := srv.Pair()
	if err != nil {
		t.Fatal(err)
	}
	xc := xs.New(nc)
	defer xc.Close()
	dir := "/local/domain/0/backend/vbd/1/51712"

	if _, err := ReadState(xc, dir); !errors.Is(err, ErrGone) {
		t.Fatalf("ReadState of a missing dir: %v, want ErrGone", err)
	}
	if err := WriteState(xc, dir, StateInitialising); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	go func() {
		time.Sleep(20 * time.Millisecond)
		WriteState(xc, dir, StateInitWait)
		time.Sleep(20 * time.Millisecond)
		WriteState(xc, dir, StateConnected)
	}()
	s, err := WaitState(ctx, xc, dir, StateIs(StateConnected, StateClosed))
	if err != nil || s != StateConnected {
		t.Fatalf("WaitState = %v, %v; want Connected", s, err)
	}

	if err := WriteError(xc, dir, "the image is in use"); err != nil {
		t.Fatal(err)
	}
	if s, err := ReadState(xc, dir); err != nil || s != StateClosed {
		t.Fatalf("after WriteError: %v, %v", s, err)
	}
	if got := ReadError(xc, dir); got != "the image is in use" {
		t.Fatalf("ReadError = %q", got)
	}

	// The directory removed while waiting: ErrGone, promptly.
	go func() {
		time.Sleep(20 * time.Millisecond)
		xc.Rm(dir)
	}()
	if _, err := WaitState(ctx, xc, dir, StateIs(StateConnected)); !errors.Is(err, ErrGone) {
		t.Fatalf("WaitState on a removed dir: %v, want ErrGone", err)
	}

	short, cancel2 := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel2()
	WriteState(xc, dir, StateInitialising)
	if _, err := WaitState(short, xc, dir, StateIs(StateConnected)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("WaitState past its deadline: %v", err)
	}
}
