"""Wire contract: .proto files, generated stubs (never edited) and the proto<->domain conversion."""
