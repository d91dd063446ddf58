package xs

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"
)

// WatchDir calls fn with dir's children whenever something below dir
// changes, and every rescan besides, until ctx ends (nil) or the watch
// does (an error). Watch events are hints: fn is handed what the
// directory holds now, an absent directory as no children, and a listing
// that failed otherwise as its error; the rescan finds whatever an event
// coalesced away. The daemon's first event calls fn at once.
func (c *Client) WatchDir(ctx context.Context, dir, token string, rescan time.Duration, fn func(children []string, err error)) error {
	w, err := c.Watch(dir, token)
	if err != nil {
		return fmt.Errorf("xs: watch %s: %w", dir, err)
	}
	defer c.Unwatch(w)
	tick := time.NewTicker(rescan)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events():
			if !ok {
				return fmt.Errorf("xs: watch of %s ended: %v", dir, c.Err())
			}
		case <-tick.C:
		}
		names, err := c.Directory(dir)
		if errors.Is(err, syscall.ENOENT) {
			names, err = nil, nil
		}
		fn(names, err)
	}
}
