"""Provider adapters: implementations of the `core.ports` provider Protocols."""
