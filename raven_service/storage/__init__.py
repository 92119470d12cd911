"""Storage adapters: implementations of the `core.ports.Store` port.

- `sqlite`: the embedded default (one SQLite file in WAL mode under the data dir).
- `migrations`: the versioned schema of every backend, applied by `Store.open()` / `raven db upgrade`.
- `money`: exact Decimal <-> integer pico-credit conversion shared by the backends.
"""
