"""Client-server API routes, one module per spec chapter."""
