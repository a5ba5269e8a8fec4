//! The REST API over a real socket and with `oneshot`: every endpoint and error path.
