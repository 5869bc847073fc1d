"""HTTP APIs: thin routes that parse, call one service method, and render."""
