// The cuttable TCP proxy: what a broken network does to a connection.

package brokertest

import (
	"io"
	"net"
	"sync"
)

// Proxy forwards 127.0.0.1:<port> to a broker; Cut drops every open
// connection, as a network would, and keeps accepting new ones.
type Proxy struct {
	// Address is the host:port to dial instead of the broker's.
	Address  string
	target   string
	listener net.Listener
	mu       sync.Mutex
	open     map[net.Conn]struct{}
	accepted int
	refuse   bool
}

// StartProxy listens on a free loopback port and forwards to target.
func StartProxy(target string) (*Proxy, error) {
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{
		Address:  listener.Addr().String(),
		target:   target,
		listener: listener,
		open:     map[net.Conn]struct{}{},
	}
	go p.accept()
	return p, nil
}

func (p *Proxy) accept() {
	for {
		inbound, err := p.listener.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		refuse := p.refuse
		if !refuse {
			p.accepted++
		}
		p.mu.Unlock()
		if refuse {
			_ = inbound.Close()
			continue
		}
		outbound, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = inbound.Close()
			continue
		}
		p.track(inbound, outbound)
		go p.pump(inbound, outbound)
		go p.pump(outbound, inbound)
	}
}

func (p *Proxy) track(conns ...net.Conn) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, conn := range conns {
		p.open[conn] = struct{}{}
	}
}

// pump copies one direction; when either end fails, both close.
func (p *Proxy) pump(from, to net.Conn) {
	_, _ = io.Copy(to, from)
	p.mu.Lock()
	delete(p.open, from)
	delete(p.open, to)
	p.mu.Unlock()
	_ = from.Close()
	_ = to.Close()
}

// Cut closes every open connection.
func (p *Proxy) Cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for conn := range p.open {
		_ = conn.Close()
	}
	p.open = map[net.Conn]struct{}{}
}

// Refuse makes the proxy close every new connection at once (a broker
// that stays unreachable); it cuts the open ones too.
func (p *Proxy) Refuse() {
	p.mu.Lock()
	p.refuse = true
	p.mu.Unlock()
	p.Cut()
}

// Connections is how many connections the proxy has forwarded.
func (p *Proxy) Connections() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// Close stops listening and cuts every connection.
func (p *Proxy) Close() {
	_ = p.listener.Close()
	p.Cut()
}
