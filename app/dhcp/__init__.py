"""Leaseflow's DHCPv4 server, in layers (edges → decisions → values):

- `server`: the UDP socket adapter (`DhcpServer`, `serve`, `python -m app.dhcp.server`);
- `handler`: bytes in → outcome, counters; runs the decisions against a backend;
- `rfc2131`: RFC 2131/3046/6842 decisions as pure functions (`plan`, `answer`, `destination`);
- `backend`: the `LeaseBackend` port that chooses addresses; `memory`: an in-memory one;
- `codec` / `options`: BOOTP/DHCPv4 packets to and from bytes; `config`: what is served;
- `errors`: `DhcpError` and its family; `kea`: the Kea control-agent client.
"""
