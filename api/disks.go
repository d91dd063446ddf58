package api

import (
	"context"
	"net/http"
	"net/url"
)

// Disk is one disk of a domain (GET /v1/domains/{dom}/disks).
type Disk struct {
	Dev  string `json:"dev"`
	Host string `json:"host"` // the host whose driver domain serves the image
	Path string `json:"path"` // the raw image, on Host
	Mode string `json:"mode"` // "w" or "r"
	// Socket is the Unix socket the disk is served on as NBD, on the
	// domain's host ("" for a console = "direct" domain, which is its
	// disks' front end itself).
	Socket string `json:"socket,omitempty"`
	// Export is the address the domain's host serves it on as NBD, if
	// exported.
	Export string `json:"export,omitempty"`
}

// DiskExport asks for a disk to be served over NBD on TCP.
type DiskExport struct {
	Listen string `json:"listen,omitempty"` // default: the host's address, port 10809
}

// Disks lists a domain's disks.
func (c *Client) Disks(ctx context.Context, dom string) ([]Disk, error) {
	var out []Disk
	err := c.do(ctx, http.MethodGet, "/v1/domains/"+url.PathEscape(dom)+"/disks", nil, &out)
	return out, err
}

// ExportDisk has the domain's host serve disk dev over NBD until
// UnexportDisk or the domain ends (POST /v1/domains/{dom}/disks/{dev}/export).
func (c *Client) ExportDisk(ctx context.Context, dom, dev string, req DiskExport) (Disk, error) {
	var out Disk
	err := c.do(ctx, http.MethodPost, "/v1/domains/"+url.PathEscape(dom)+"/disks/"+url.PathEscape(dev)+"/export", req, &out)
	return out, err
}

// UnexportDisk stops an export (DELETE /v1/domains/{dom}/disks/{dev}/export).
func (c *Client) UnexportDisk(ctx context.Context, dom, dev string) error {
	return c.do(ctx, http.MethodDelete, "/v1/domains/"+url.PathEscape(dom)+"/disks/"+url.PathEscape(dev)+"/export", nil, nil)
}
