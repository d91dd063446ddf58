package xenstore

import (
	"strconv"
	"strings"

	"shi/internal/abi"
)

// HomePath is a domain's home, /local/domain/<domid> (XS_GET_DOMAIN_PATH),
// and the base of its relative paths.
func HomePath(dom uint32) string { return "/local/domain/" + strconv.FormatUint(uint64(dom), 10) }

// Special event paths.
const (
	IntroduceDomain = "@introduceDomain"
	ReleaseDomain   = "@releaseDomain"
)

func validChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c == '-' || c == '/' || c == '_' || c == '@'
}

// validPath reports whether p is a valid absolute node path
// (is_valid_nodename): starts with '/', no "//", no trailing '/' except
// for the root, at most XENSTORE_ABS_PATH_MAX bytes, allowed characters only.
func validPath(p string) bool {
	if len(p) == 0 || p[0] != '/' || len(p) > abi.XENSTORE_ABS_PATH_MAX {
		return false
	}
	if len(p) > 1 && p[len(p)-1] == '/' {
		return false
	}
	for i := 0; i < len(p); i++ {
		if !validChar(p[i]) {
			return false
		}
		if p[i] == '/' && i+1 < len(p) && p[i+1] == '/' {
			return false
		}
	}
	return true
}

// relLen is the length the path-length quota applies to: the part after
// /local/domain/<id>/ for paths below a domain home, else the whole path.
func relLen(p string) int {
	const pre = "/local/domain/"
	if !strings.HasPrefix(p, pre) {
		return len(p)
	}
	rest := p[len(pre):]
	i := 0
	for i < len(rest) && i < 5 && rest[i] >= '0' && rest[i] <= '9' {
		i++
	}
	if i == 0 || i >= len(rest) || rest[i] != '/' {
		return len(p)
	}
	return len(rest) - i - 1
}

// parentOf returns the parent path of a valid non-root path.
func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

// baseOf returns the last element of a valid non-root path.
func baseOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// childPath joins a parent path and a child name.
func childPath(parent, name string) string {
	if parent == "/" {
		return "/" + name
	}
	return parent + "/" + name
}
