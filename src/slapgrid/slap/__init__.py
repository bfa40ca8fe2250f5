"""The SLAP protocol: wire codec, documents, HTTP transport and client. No other I/O."""
