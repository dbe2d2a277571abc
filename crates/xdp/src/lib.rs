//! AF_XDP PacketDevice (in progress).
