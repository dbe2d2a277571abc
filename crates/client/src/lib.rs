//! warpwire client library (in progress).
