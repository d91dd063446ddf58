package ring

import "time"

// Spin polls ready until it reports true or limit has passed (reading the
// clock only every 64 polls); a zero or negative limit does not poll.
// Both ends of a shared ring use it before they sleep on an event
// channel: waking through the peer's eventfd costs tens of microseconds,
// more than moving a chunk of data.
func Spin(limit time.Duration, ready func() bool) bool {
	if limit <= 0 {
		return false
	}
	var start time.Time
	for i := 0; ; i++ {
		if ready() {
			return true
		}
		if i&63 == 63 {
			if start.IsZero() {
				start = time.Now()
			} else if time.Since(start) > limit {
				return false
			}
		}
	}
}
