//! warpwire server engine (in progress).
