package agent

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// hostResources reads this host's CPUs and memory (total, available) in
// bytes from /proc/meminfo.
func hostResources() (cpus int, total, free uint64) {
	cpus = runtime.NumCPU()
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return cpus, 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Fields(sc.Text())
		if len(fs) < 2 {
			continue
		}
		v, _ := strconv.ParseUint(fs[1], 10, 64)
		switch fs[0] {
		case "MemTotal:":
			total = v * 1024
		case "MemAvailable:":
			free = v * 1024
		}
	}
	return cpus, total, free
}
