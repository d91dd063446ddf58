// Command whoami prints the IPv4 addresses of the network namespace it runs
// in; nstest's tests build it to check Build and Start.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil {
			fmt.Println(ipn.IP)
		}
	}
}
