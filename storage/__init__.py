"""Storage: the LevelDB engine and its tables. Knows bytes and keys, no Matrix rules."""
