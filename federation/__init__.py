"""Server-server API: keys, request signing, discovery, sender, inbound transactions."""
