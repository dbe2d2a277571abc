//! messages.rs once more, through TLS: tests/common sees this crate's name
//! end in `_tls`, wraps the server's transport in warpwire-tls and makes
//! the test's client a blocking rustls stream (rustls's own code, none of
//! warpwire's). Every behaviour of docs/protocol.md those tests check
//! must hold the same through TLS.

#[path = "messages.rs"]
mod messages;
