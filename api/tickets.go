package api

import (
	"context"
	"net/http"
	"time"
)

// ConsoleTicketsPath issues one-shot console tickets (POST): a browser
// cannot set headers on a WebSocket, so the web console asks here, with
// the API's usual credentials, and puts the ticket in the console URL
// (ConsoleQuery.Ticket). A ticket opens one console connection of the
// domain it names, on the agent that issued it, within 30 seconds.
const ConsoleTicketsPath = "/v1/console/tickets"

// ConsoleTicketRequest asks for a ticket for one domain.
type ConsoleTicketRequest struct {
	Domain string `json:"domain"` // a name or id
}

// ConsoleTicket is a ticket and when it stops being valid.
type ConsoleTicket struct {
	Ticket  string    `json:"ticket"`
	Expires time.Time `json:"expires"`
}

// ConsoleTicket asks the agent for a one-shot console ticket for dom.
func (c *Client) ConsoleTicket(ctx context.Context, dom string) (ConsoleTicket, error) {
	var t ConsoleTicket
	err := c.do(ctx, http.MethodPost, ConsoleTicketsPath, ConsoleTicketRequest{Domain: dom}, &t)
	return t, err
}
