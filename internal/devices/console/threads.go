package console

import (
	"runtime"
	"sync"
)

// HelperThreads is the number of threads the console helper takes before
// it starts the domain's program; the domain's cgroup allows its pids on
// top of them. A domain whose program fills its pids (a fork bomb) then
// keeps its console: the Go runtime keeps a thread it made for reuse, so
// the helper never needs a new one, and a thread it could not make would
// abort it (pthread_create fails under the pids cap), ending the domain.
// A helper that serves disks blocks a thread in each disk's event wait:
// the reserve covers a few disks beside the console.
const HelperThreads = 32

// ReserveThreads has the Go runtime make n threads now and keep them
// idle: n goroutines each hold a thread until all of them do.
func ReserveThreads(n int) {
	var held sync.WaitGroup
	release := make(chan struct{})
	held.Add(n)
	for range n {
		go func() {
			runtime.LockOSThread()
			held.Done()
			<-release
			runtime.UnlockOSThread()
		}()
	}
	held.Wait()
	close(release)
}
